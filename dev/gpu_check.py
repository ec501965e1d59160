"""``make gpu-check``: everything that needs a GPU, in one run, into one JSON of figures.

On a CUDA machine (``--device cuda``, the default) it runs, each part in its own process so that one
failure does not hide the rest:

1. the CUDA tests (every test whose name says cuda, gpu or device, across the suite);
2. a 20-step training of every stage (``train all``) on a small training folder the script makes;
3. a photo job and a short video job on media the script makes, with the shipped networks;
4. ``bench speed`` at 480p and at 1080p, CondSR and the stack with the best upscaler present, and a
   batch sweep at 480p;

and writes ``gpu-check.json``: per part its exit status, seconds, the tail of its output, and the
figures the benchmarks print. ``--device cpu --dry`` runs the same parts at small sizes on the CPU
(two training steps, a 64x48 clip, two frames per benchmark): CI runs it, so the script cannot rot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "archive_restore", *args]


def _run(name: str, command: list[str], report: dict, timeout: float, env: dict | None = None) -> dict:
    """Run ``command``, record its exit status, seconds and output tail under ``report[name]``."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})})
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, output = 124, f"timed out after {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}"
    entry = {"rc": rc, "seconds": round(time.monotonic() - started, 1), "tail": output[-3000:]}
    report[name] = entry
    print(f"   rc {rc} in {entry['seconds']} s", flush=True)
    if rc != 0:
        print(output[-3000:], flush=True)
    return entry


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.random((max(1, h // 8), max(1, w // 8), 3))
    return (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def training_folder(root: Path, seed: int = 0) -> Path:
    """A small training folder with the layout of ../shared/data/train (smooth random pictures)."""
    rng = np.random.default_rng(seed)
    for sub, n, size in (("hq_natural/a", 8, 256), ("hq_faces/x", 8, 128), ("hq_faces/faces256", 1, 128)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / sub / f"{i}.png"), _smooth(rng, size, size))
    for sub in ("real_face_pairs/LQ", "real_face_pairs/PseudoHQ"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            cv2.imwrite(str(root / sub / f"{i:06d}.png"), _smooth(rng, 128, 128))
    return root


def photo_folder(root: Path, size: tuple[int, int], seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("a.png", "b.jpg", "sub/c.png")):
        cv2.imwrite(str(root / name), _smooth(rng, size[1] + 8 * i, size[0]))
    return root


def _speed(name: str, args: list[str], report: dict, work: Path, timeout: float) -> None:
    out = work / f"{name}.json"
    entry = _run(name, _cli("bench", "speed", "--quiet", "--json", str(out), *args), report, timeout)
    if entry["rc"] == 0:
        entry["figures"] = json.loads(out.read_text())


def pick_upscaler(dry: bool) -> str | None:
    """The upscaler file the jobs and benchmarks use: what ``--upscaler auto`` takes (Real-ESRGAN
    x4plus where present); in a dry run the small SRVGG animevideov3 when present (the CPU is slow
    with RRDB). None when there is none (CondSR alone)."""
    from archive_restore.errors import ArchiveRestoreError
    from archive_restore.upscalers.upscaler import CONDSR, resolve_upscaler

    if dry:
        try:
            return resolve_upscaler("realesr-animevideov3").path
        except ArchiveRestoreError:
            pass
    ref = resolve_upscaler("auto")
    return None if ref.name == CONDSR else ref.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--dry", action="store_true", help="small sizes (for the CPU, in CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check.json")
    parser.add_argument("--skip", action="append", default=[], choices=["tests", "train", "jobs", "speed"],
                        help="leave a part out (repeatable)")
    args = parser.parse_args(argv)
    import torch

    dry, device = args.dry, args.device
    report: dict = {"device": device, "dry": dry, "torch": torch.__version__, "cuda": torch.version.cuda,
                    "python": platform.python_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("gpu-check: no usable CUDA device here; run it on a GPU machine, or with --device cpu --dry",
                  file=sys.stderr)
            return 2
        props = torch.cuda.get_device_properties(torch.device(device))
        report["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}"}
    timeout = 300 if dry else 600
    upscaler = pick_upscaler(dry)
    report["upscaler"] = upscaler
    stack = ["--upscaler", upscaler] if upscaler else []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        if "tests" not in args.skip:
            tests = ["-k", "cuda or gpu or device"] if not dry else ["tests/test_device.py"]
            _run("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], report, timeout)
        if "train" not in args.skip:
            data, models = training_folder(work / "train"), work / "trained"
            _run("train_all", _cli("train", "all", "--data", str(data), "--models-dir", str(models), "--work-dir",
                                   str(work / "states"), "--steps", "2" if dry else "20", "--batch", "2" if dry else "16",
                                   "--device", device), report, timeout)
            report["train_all"]["checkpoints"] = sorted(p.name for p in models.glob("*.safetensors"))
        if "jobs" not in args.skip:
            from archive_restore.bench.common import synth_clip

            photos = photo_folder(work / "photos", (64, 48) if dry else (640, 480))
            _run("photo_job", _cli("run", str(photos), "-o", str(work / "photos_out"), "--device", device,
                                   "--jobs-dir", str(work / "jobs"), "--face-detector", "haar",
                                   "--upscaler", upscaler or "condsr"), report, timeout)
            report["photo_job"]["outputs"] = sorted(str(p.relative_to(work / "photos_out"))
                                                    for p in (work / "photos_out").rglob("*") if p.is_file())
            clip = synth_clip(work / "clip.mp4", 6 if dry else 50, *((64, 48) if dry else (640, 480)))
            _run("video_job", _cli("video", str(clip), "-o", str(work / "clip_out.mp4"), "--device", device,
                                   "--jobs-dir", str(work / "jobs"), "--face-detector", "haar",
                                   "--upscaler", upscaler or "condsr"), report, timeout)
            report["video_job"]["output_bytes"] = (work / "clip_out.mp4").stat().st_size \
                if (work / "clip_out.mp4").exists() else 0
        if "speed" not in args.skip:
            frames = ["--frames", "2"] if dry else []
            sizes = {"speed_480p": (64, 48) if dry else (640, 480), "speed_1080p": (96, 64) if dry else (1920, 1080)}
            for name, (w, h) in sizes.items():
                _speed(name, ["--device", device, "--width", str(w), "--height", str(h), *frames, *stack], report, work,
                       timeout)
            for batch in ((1, 2) if dry else (1, 2, 4, 8, 16)):
                w, h = sizes["speed_480p"]
                _speed(f"speed_480p_batch{batch}", ["--device", device, "--width", str(w), "--height", str(h),
                                                    "--batch", str(batch), *frames], report, work, timeout)
    parts = {k: v for k, v in report.items() if isinstance(v, dict) and "rc" in v}
    report["failed"] = sorted(k for k, v in parts.items() if v["rc"] != 0)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"gpu-check: {len(parts) - len(report['failed'])} of {len(parts)} parts passed; figures in {args.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
