"""``archive-restore bench speed``: frames per second of each stage, end to end, and against a
Real-ESRGAN-style per-frame loop with the same network, weights and encoder, in the same process.

Per network size (``compact``, ``large``), on a clip it makes (or the first frames of a given file):

``decode_fps``          decoding only (``media.video``, as the render decodes: float RGB frames)
``forward_fps``         our fast forward (``pipeline.forward``) at ``batch``, data already on the device
``eager_forward_fps``   ``CondSR.forward`` as written, fp32, NCHW, one frame at a time
``end_to_end_fps``      the video job's own render items (decode -> CondSR -> encode, overlapped), read
                        from the job store's ``render_seconds``; the analysis pass is not counted
``per_frame_loop_fps``  as ``inference_realesrgan_video.py``: read a frame, numpy -> tensor -> model ->
                        numpy, write it with the same encoder, one frame at a time, nothing overlapped
``peak_rss_mb``         the process's peak resident memory during the end-to-end render
``peak_gpu_mb``         peak CUDA memory allocated during it (None on CPU)

The baselines (eager, per-frame loop) run with torch's own thread count, as a plain script gets it;
ours with the thread count ``pipeline.forward.cpu_threads`` chooses.
"""
from __future__ import annotations

import platform
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
import torch
from tqdm import tqdm

from .device import resolve_device
from .errors import ModelNotFoundError
from .media.video import EncodeSettings, SegmentWriter, open_backend, probe
from .models import find_model
from .nets import CondSR, build_condsr, load_checkpoint
from .nets.condsr import SIZES
from .pipeline.forward import FastCondSR, restore_nhwc

KEYS = ("decode_fps", "forward_fps", "eager_forward_fps", "end_to_end_fps", "per_frame_loop_fps", "peak_rss_mb",
        "peak_gpu_mb", "device", "frames", "width", "height", "scale", "batch",
        "end_to_end_over_forward", "ours_over_per_frame_loop")
CLIP_FPS = 25


@dataclass
class SpeedConfig:
    input: Path | None = None
    sizes: Sequence[str] = ("compact", "large")
    device: str = "auto"
    batch: int = 4
    frames: int | None = None  # default: 8 on CPU, 100 on CUDA
    width: int = 480
    height: int = 352
    scale: int = 4
    tile: int | None = None    # LQ tile of the render; default: the frame's longer side (no tiling)
    seed: int = 0
    models: Sequence[Path] = field(default_factory=tuple)
    progress: bool = True


# ---------------------------------------------------------------------------------------------- clip
def synth_clip(path: Path, frames: int, width: int, height: int, seed: int = 0) -> Path:
    """An h264 clip of moving textured shapes over a gradient (``frames`` frames at 25 frames/s)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 48, (height, width, 1), dtype=np.int16)
    ramp = np.linspace(40, 200, width, dtype=np.float32)[None, :, None] * np.array([1.0, 0.8, 0.6], np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=CLIP_FPS, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.broadcast_to(ramp, (height, width, 3)).astype(np.int16) + texture
            side = max(4, min(width, height) // 4)
            x, y = (i * 7) % max(1, width - side), (i * 3) % max(1, height - side)
            img[y:y + side, x:x + side] = (230, 60, 40)
            frame = av.VideoFrame.from_ndarray(img.clip(0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def first_frames(source: Path, path: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``source`` re-encoded losslessly enough (crf 12) to ``path``."""
    info = probe(source)
    with SegmentWriter(path, info, info.width, info.height, EncodeSettings(crf=12, preset="veryfast")) as writer:
        for i, frame in enumerate(open_backend("pyav").frames(source, info)):
            if i >= frames:
                break
            writer.write(frame.rgb, frame.pts)
    return path


# -------------------------------------------------------------------------------------------- memory
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- the stages
def decode_frames(clip: Path, progress: bool = True) -> tuple[float, list[np.ndarray]]:
    """Decode-only rate, and the frames (float RGB, as the render decodes them)."""
    info = probe(clip)
    frames = []
    started = time.perf_counter()
    for frame in tqdm(open_backend("pyav").frames(clip, info, as_float=True), desc="decode", unit="frame",
                      disable=not progress, leave=False):
        frames.append(frame.rgb)
    return len(frames) / (time.perf_counter() - started), frames


def forward_rate(fast: FastCondSR, frames: list[np.ndarray], code: torch.Tensor, batch: int,
                 progress: bool = True) -> float:
    """Our forward at ``batch``, frames already on the device (one warm-up batch not counted)."""
    device = fast.device
    lq = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2)
    groups = [lq[i:i + batch] for i in range(0, len(frames), batch)]
    restore_nhwc(fast, groups[0], code, fast.scale)
    _sync(device)
    started = time.perf_counter()
    for group in tqdm(groups, desc=f"forward x{batch}", unit="batch", disable=not progress, leave=False):
        restore_nhwc(fast, group, code, fast.scale)
    _sync(device)
    return len(frames) / (time.perf_counter() - started)


def eager_rate(model: CondSR, frames: list[np.ndarray], code: torch.Tensor, progress: bool = True) -> float:
    """``CondSR.forward`` as written, fp32, NCHW, one frame at a time, data on the device."""
    device = next(model.parameters()).device
    lq = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).contiguous()
    z = code[None]
    with torch.no_grad():
        model(lq[:1], z)
        _sync(device)
        started = time.perf_counter()
        for i in tqdm(range(len(frames)), desc="eager forward", unit="frame", disable=not progress, leave=False):
            model(lq[i:i + 1], z).clamp(0, 1)
        _sync(device)
    return len(frames) / (time.perf_counter() - started)


def per_frame_loop(model: CondSR, clip: Path, out: Path, code: torch.Tensor, progress: bool = True) -> float:
    """The Real-ESRGAN ``inference_realesrgan_video.py`` shape: read a frame, numpy -> tensor ->
    model -> numpy, write it with the same encoder, one frame at a time in one thread."""
    device = next(model.parameters()).device
    info = probe(clip)
    z = code[None]
    count = 0
    started = time.perf_counter()
    with SegmentWriter(out, info, info.width * model.scale, info.height * model.scale, EncodeSettings()) as writer, \
            torch.no_grad():
        for frame in tqdm(open_backend("pyav").frames(clip, info), desc="per-frame loop", unit="frame",
                          disable=not progress, leave=False):
            img = torch.from_numpy(frame.rgb.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).to(device)
            output = model(img, z).squeeze(0).float().clamp(0, 1).cpu().numpy()
            output = (np.transpose(output, (1, 2, 0)) * 255.0).round().astype(np.uint8)
            writer.write(output, frame.pts)
            count += 1
    return count / (time.perf_counter() - started)


def end_to_end(engine, model: CondSR, clip: Path, work: Path, cfg: SpeedConfig, tile: int,
               device: torch.device) -> tuple[float, float, float | None]:
    """The video job itself on ``clip`` with ``model`` as its restorer; frames per second of its
    render items (from the job store), peak RSS and peak GPU memory during the job."""
    from .pipeline.video import VideoJobOptions, open_video_job
    from .store import JobStore

    engine.sr = model
    options = VideoJobOptions(scale=cfg.scale, tile=tile, device=str(device), batch=cfg.batch,
                              models_dirs=tuple(cfg.models), chunk_frames=10_000)
    store = JobStore.open(work / "jobs")
    job = open_video_job(store, clip, work / f"restored_{id(model)}.mp4", options, progress=cfg.progress)
    job._engine = engine
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    summary = job.run()
    if summary.failed:
        failed = store.items(job.job.id, status="failed")
        raise RuntimeError(f"the video job failed: {failed[0].error if failed else summary}")
    rendered = [i for i in store.items(job.job.id) if "render_seconds" in i.extra]
    frames = sum(i.extra["frames"] for i in rendered)
    seconds = sum(i.extra["render_seconds"] for i in rendered)
    gpu = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return frames / seconds, peak_rss_mb(), gpu


# ------------------------------------------------------------------------------------------ networks
def load_size(size: str, code_dim: int, models: Sequence[Path], device: torch.device, seed: int) -> tuple[CondSR, str]:
    """The CondSR of ``size``: shipped weights when a file is found, else random weights (said)."""
    try:
        path = find_model(f"condsr_{size}", models)
        ckpt = load_checkpoint(path, device, expect="CondSR")
        if ckpt.model.code_dim == code_dim:
            return ckpt.model, str(path)
    except ModelNotFoundError:
        pass
    torch.manual_seed(seed)
    model = build_condsr(size, code_dim=code_dim).to(device).eval()
    return model, f"random init (width {SIZES[size]['width']}, {SIZES[size]['blocks']} blocks, seed {seed})"


def run_speed(cfg: SpeedConfig) -> dict:
    from .pipeline.engine import Engine, EngineOptions

    device = resolve_device(cfg.device)
    baseline_threads = torch.get_num_threads()
    frames_wanted = cfg.frames or (100 if device.type == "cuda" else 8)
    result: dict = {}
    meta = {"input": str(cfg.input) if cfg.input else f"synthetic {cfg.width}x{cfg.height} h264 clip",
            "weights": {}, "torch": torch.__version__, "machine": machine(device), "code": "blind code of the first frame"}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        work = Path(tmp)
        clip = (first_frames(cfg.input, work / "clip.mp4", frames_wanted) if cfg.input
                else synth_clip(work / "clip.mp4", frames_wanted, cfg.width, cfg.height, cfg.seed))
        decode_fps, frames = decode_frames(clip, cfg.progress)
        height, width = frames[0].shape[:2]
        tile = cfg.tile or max(height, width)
        engine = Engine(EngineOptions(scale=cfg.scale, device=str(device), face_detector="haar", tile=tile,
                                      models_dirs=tuple(cfg.models), face_restorer="none"))
        meta["tile"], meta["threads"] = tile, {"ours": torch.get_num_threads(), "baselines": baseline_threads}
        code = torch.from_numpy(engine.image_blind_code(frames[0])).to(device)
        for size in cfg.sizes:
            model, weights = load_size(size, engine.code_dim, cfg.models, device, cfg.seed)
            meta["weights"][size] = weights
            fast = FastCondSR(model, device)
            with threads(baseline_threads):
                eager = eager_rate(model, frames, code, cfg.progress)
                loop = per_frame_loop(model, clip, work / f"loop_{size}.mp4", code, cfg.progress)
            forward = forward_rate(fast, frames, code, cfg.batch, cfg.progress)
            e2e, rss, gpu = end_to_end(engine, model, clip, work, cfg, tile, device)
            result[size] = {
                "decode_fps": round(decode_fps, 3), "forward_fps": round(forward, 4),
                "eager_forward_fps": round(eager, 4), "end_to_end_fps": round(e2e, 4),
                "per_frame_loop_fps": round(loop, 4), "peak_rss_mb": rss, "peak_gpu_mb": gpu,
                "device": str(device), "frames": len(frames), "width": width, "height": height,
                "scale": cfg.scale, "batch": cfg.batch,
                "end_to_end_over_forward": round(e2e / forward, 3), "ours_over_per_frame_loop": round(e2e / loop, 3)}
    return {**result, "meta": meta}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        import os
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = None
    return f"{platform.machine()} CPU, {cores} cores"


def format_table(result: dict) -> str:
    sizes = [k for k in result if k != "meta"]
    meta = result["meta"]
    rows = [("", *sizes)]
    for key in KEYS:
        rows.append((key, *("-" if result[s][key] is None else str(result[s][key]) for s in sizes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"input: {meta['input']}; tile {meta['tile']}; {meta['machine']}; torch {meta['torch']}; "
                 f"threads: ours {meta['threads']['ours']}, baselines {meta['threads']['baselines']}")
    lines += [f"{size} weights: {meta['weights'][size]}" for size in sizes]
    return "\n".join(lines)

