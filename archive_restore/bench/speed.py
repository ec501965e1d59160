"""``archive-restore bench speed``: frames per second of each stage, end to end, and against a
Real-ESRGAN-style per-frame loop with the same network, weights and encoder, in the same process.

A row per CondSR size (``compact``; ``large`` on request) and per upscaler file (``--upscaler``,
keyed by the file's stem: the restoration stack, cleanup -> that upscaler -> the CondSR blend at the
jobs' default fidelity), on a clip it makes (or the first frames of a given file):

``decode_fps``          decoding only (``media.video``, as the render decodes: uint8 RGB frames)
``forward_fps``         our fast path (``pipeline.forward.FrameRestorer`` with the job's default plan:
                        whole frames batched when they fit the memory budget, tiles otherwise),
                        data already decoded
``eager_forward_fps``   the networks' ``forward`` as written, fp32, NCHW, one frame at a time (the
                        upscaler through torch eagerly, whatever runtime the job chose for it)
``end_to_end_fps``      the video job's own render items (decode -> network -> encode, overlapped),
                        with the job's defaults, read from the job store's ``render_seconds``; the
                        analysis pass is not counted
``per_frame_loop_fps``  as ``inference_realesrgan_video.py``: read a frame, numpy -> tensor -> the same
                        networks, eager as the eager forward -> numpy, write it with the same encoder,
                        one frame at a time
``peak_rss_mb``         the process's peak resident memory during the end-to-end render
``peak_gpu_mb``         peak CUDA memory allocated during it (None on CPU)

The baselines (eager, per-frame loop) run with torch's own thread count, as a plain script gets it;
ours with the thread count ``compute.cpu.cpu_threads`` chooses (``threads`` in the table).
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..compute.cpu import cpu_threads
from ..compute.device import resolve_device
from ..errors import ModelNotFoundError
from ..media.video import EncodeSettings, SegmentWriter, open_backend, probe
from ..nets import CondSR, build_condsr, load_checkpoint
from ..nets.condsr import SIZES
from ..pipeline.forward import FrameRestorer
from ..upscalers.runtime import ENV_VAR as RUNTIME_ENV
from ..upscalers.upscaler import CONDSR
from ..weights.folders import find_model
from .common import first_frames, peak_rss_mb, reset_peak_rss, synth_clip

KEYS = ("decode_fps", "forward_fps", "eager_forward_fps", "end_to_end_fps", "per_frame_loop_fps", "peak_rss_mb",
        "peak_gpu_mb", "device", "frames", "width", "height", "scale", "batch", "tile", "threads",
        "end_to_end_over_forward", "ours_over_per_frame_loop")
DEFAULT_FRAMES = {"cpu": 48, "cuda": 100}  # long enough that a job's fixed costs do not dominate


@dataclass
class SpeedConfig:
    input: Path | None = None
    sizes: Sequence[str] = ("compact",)
    upscalers: Sequence[Path] = ()
    device: str = "auto"
    batch: int = 4
    frames: int | None = None  # default: DEFAULT_FRAMES for the device
    width: int = 480
    height: int = 352
    scale: int = 4
    tile: int | None = None    # LQ tile; default: the jobs' own (sized to the device's free memory)
    seed: int = 0
    models: Sequence[Path] = field(default_factory=tuple)
    progress: bool = True
    runtime: str | None = None  # the upscaler's CPU runtime (``upscalers.runtime``); None: the jobs' choice
    precisions: Sequence[str] = ("auto",)  # the upscalers' precision on the CPU; several: rows NAME@PRECISION


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
    """Decode-only rate, and the frames (uint8 RGB, as the render decodes them)."""
    info = probe(clip)
    frames = []
    started = time.perf_counter()
    for frame in tqdm(open_backend("pyav").frames(clip, info), desc="decode", unit="frame",
                      disable=not progress, leave=False):
        frames.append(frame.rgb)
    return len(frames) / (time.perf_counter() - started), frames


Plain = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, H, W) in [0, 1] -> (1, 3, H*s, W*s), as written


def forward_rate(restorer: FrameRestorer, frames: list[np.ndarray], code: np.ndarray, progress: bool = True) -> float:
    """Our fast path on decoded frames, ``restorer.batch`` at a time as its plan allows (one warm-up
    batch not counted)."""
    step = restorer.batch
    restorer.restore(frames[:step], code)
    _sync(restorer.device)
    started = time.perf_counter()
    for i in tqdm(range(0, len(frames), step), desc="forward", unit="batch", disable=not progress, leave=False):
        restorer.restore(frames[i:i + step], code)
    _sync(restorer.device)
    return len(frames) / (time.perf_counter() - started)


def _tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).to(device)


def eager_rate(plain: Plain, frames: list[np.ndarray], device: torch.device, progress: bool = True) -> float:
    """The networks' forward as written, fp32, NCHW, one frame at a time, frames already decoded."""
    with torch.no_grad():
        plain(_tensor(frames[0], device))
        _sync(device)
        started = time.perf_counter()
        for frame in tqdm(frames, desc="eager forward", unit="frame", disable=not progress, leave=False):
            plain(_tensor(frame, device)).clamp(0, 1)
        _sync(device)
    return len(frames) / (time.perf_counter() - started)


def per_frame_loop(plain: Plain, scale: int, clip: Path, out: Path, device: torch.device, progress: bool = True) -> float:
    """The Real-ESRGAN ``inference_realesrgan_video.py`` shape: read a frame, numpy -> tensor ->
    networks -> numpy, write it with the same encoder, one frame at a time in one thread."""
    info = probe(clip)
    count = 0
    started = time.perf_counter()
    with SegmentWriter(out, info, info.width * scale, info.height * scale, EncodeSettings()) as writer, torch.no_grad():
        for frame in tqdm(open_backend("pyav").frames(clip, info), desc="per-frame loop", unit="frame",
                          disable=not progress, leave=False):
            output = plain(_tensor(frame.rgb, device)).squeeze(0).float().clamp(0, 1).cpu().numpy()
            output = (np.transpose(output, (1, 2, 0)) * 255.0).round().astype(np.uint8)
            writer.write(output, frame.pts)
            count += 1
    return count / (time.perf_counter() - started)


def end_to_end(engine, clip: Path, work: Path, cfg: SpeedConfig, device: torch.device, name: str,
               upscaler: str = CONDSR, precision: str = "auto") -> tuple[float, float, float | None]:
    """The video job itself on ``clip`` with ``engine`` as its restorer and the job's defaults; frames
    per second of its render items (from the job store), peak RSS and peak GPU memory during the job."""
    from ..jobs.store import JobStore
    from ..pipeline.video import VideoJobOptions, open_video_job

    options = VideoJobOptions(scale=cfg.scale, tile=cfg.tile, device=str(device), batch=cfg.batch,
                              models_dirs=tuple(cfg.models), chunk_frames=10_000, upscaler=upscaler,
                              precision=precision)
    store = JobStore.open(work / "jobs")
    job = open_video_job(store, clip, work / f"restored_{name}.mp4", options, progress=cfg.progress)
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


def _engine(cfg: SpeedConfig, device: torch.device, upscaler: str = CONDSR, precision: str = "auto"):
    from ..pipeline.engine import Engine, EngineOptions

    return Engine(EngineOptions(scale=cfg.scale, device=str(device), face_detector="haar", tile=cfg.tile,
                                models_dirs=tuple(cfg.models), face_restorer="none", upscaler=upscaler,
                                precision=precision))


def _row(engine, plain: Plain, name: str, frames: list[np.ndarray], clip: Path, work: Path, cfg: SpeedConfig,
         device: torch.device, decode_fps: float, baseline_threads: int, upscaler: str = CONDSR,
         precision: str = "auto") -> dict:
    code = engine.image_blind_code(frames[0].astype(np.float32) / 255.0)
    with threads(baseline_threads):
        eager = eager_rate(plain(code), frames, device, cfg.progress)
        loop = per_frame_loop(plain(code), cfg.scale, clip, work / f"loop_{name}.mp4", device, cfg.progress)
    restorer = engine.frame_restorer(cfg.batch)  # the job's own, with its default plan
    forward = forward_rate(restorer, frames, code, cfg.progress)
    e2e, rss, gpu = end_to_end(engine, clip, work, cfg, device, name, upscaler, precision)
    height, width = frames[0].shape[:2]
    batch, tile = restorer.plan((height, width))
    return {"decode_fps": round(decode_fps, 3), "forward_fps": round(forward, 4),
            "eager_forward_fps": round(eager, 4), "end_to_end_fps": round(e2e, 4),
            "per_frame_loop_fps": round(loop, 4), "peak_rss_mb": rss, "peak_gpu_mb": gpu,
            "device": str(device), "frames": len(frames), "width": width, "height": height,
            "scale": cfg.scale, "batch": batch, "tile": None if tile >= max(height, width) else tile,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "end_to_end_over_forward": round(e2e / forward, 3), "ours_over_per_frame_loop": round(e2e / loop, 3)}


def run_speed(cfg: SpeedConfig) -> dict:
    """Every row's figures (and ``meta``), with the upscaler runtime ``cfg.runtime`` when given."""
    if cfg.runtime is None:
        return _run_speed(cfg)
    before = os.environ.get(RUNTIME_ENV)
    os.environ[RUNTIME_ENV] = cfg.runtime  # what `auto` takes in the engines (and the job) below
    try:
        return _run_speed(cfg)
    finally:
        if before is None:
            os.environ.pop(RUNTIME_ENV, None)
        else:
            os.environ[RUNTIME_ENV] = before


def _run_speed(cfg: SpeedConfig) -> dict:
    device = resolve_device(cfg.device)
    baseline_threads = torch.get_num_threads()
    frames_wanted = cfg.frames or DEFAULT_FRAMES.get(device.type, 48)
    result: dict = {}
    meta = {"input": str(cfg.input) if cfg.input else f"synthetic {cfg.width}x{cfg.height} h264 clip",
            "weights": {}, "torch": torch.__version__, "machine": machine(device), "code": "blind code of the first frame",
            "load": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        work = Path(tmp)
        clip = (first_frames(cfg.input, work / "clip.mp4", frames_wanted) if cfg.input
                else synth_clip(work / "clip.mp4", frames_wanted, cfg.width, cfg.height, cfg.seed))
        decode_fps, frames = decode_frames(clip, cfg.progress)
        meta["threads"] = {"ours": cpu_threads() if device.type == "cpu" else None, "baselines": baseline_threads}
        # each row's networks are gone before the next row's job starts: its peak RSS is its own
        for size in cfg.sizes:
            result[size] = _size_row(size, cfg, device, frames, clip, work, decode_fps, baseline_threads, meta)
        for path in cfg.upscalers:
            for precision in cfg.precisions:
                name = Path(path).stem + (f"@{precision}" if len(cfg.precisions) > 1 else "")
                result[name] = _upscaler_row(Path(path), cfg, device, frames, clip, work, decode_fps,
                                             baseline_threads, meta, precision, name)
    return {**result, "meta": meta}


def _size_row(size: str, cfg: SpeedConfig, device: torch.device, frames: list[np.ndarray], clip: Path, work: Path,
              decode_fps: float, baseline_threads: int, meta: dict) -> dict:
    """The row of CondSR ``size`` alone."""
    engine = _engine(cfg, device)
    model, meta["weights"][size] = load_size(size, engine.code_dim, cfg.models, device, cfg.seed)
    engine.sr = model

    def plain(code):
        z = torch.from_numpy(code).to(device)[None]
        return lambda lq: model(lq, z)

    return _row(engine, plain, size, frames, clip, work, cfg, device, decode_fps, baseline_threads)


def _upscaler_row(path: Path, cfg: SpeedConfig, device: torch.device, frames: list[np.ndarray], clip: Path,
                  work: Path, decode_fps: float, baseline_threads: int, meta: dict, precision: str = "auto",
                  name: str | None = None) -> dict:
    """The row ``name`` of the stack with the upscaler file ``path`` at ``precision``; its baselines run the
    upscaler eagerly (fp32)."""
    from ..pipeline.stack import stack_restore

    name = name or path.stem
    stacked = _engine(cfg, device, str(path.resolve()), precision)
    eager = stacked.upscaler.eager()

    def plain(code):
        z = torch.from_numpy(code).to(device)[None]
        return lambda lq: stack_restore(lq, z, stacked.cleanup, eager, stacked.sr, stacked.options.fidelity,
                                        cfg.scale)

    row = _row(stacked, plain, name, frames, clip, work, cfg, device, decode_fps, baseline_threads,
               str(path.resolve()), precision)
    meta["weights"][name] = (f"{path} (cleanup {find_model('cleanup_compact', cfg.models)}, fidelity "
                             f"{stacked.options.fidelity}); runtime {stacked.upscaler.runtime.name}")
    return row


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
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
    lines.append(f"input: {meta['input']}; {meta['machine']}; torch {meta['torch']}; "
                 f"threads: ours {meta['threads']['ours']}, baselines {meta['threads']['baselines']}; "
                 f"load average before: {meta.get('load', '?')}")
    lines += [f"{size} weights: {meta['weights'][size]}" for size in sizes]
    return "\n".join(lines)

