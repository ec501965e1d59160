"""What several benchmarks share: the synthetic clip they restore, the process's peak memory, and the
files a job wrote. Light to import: what needs PyAV or torch imports it when called."""
from __future__ import annotations

import gc
import resource
from pathlib import Path

import numpy as np

CLIP_FPS = 25


def synth_clip(path: Path, frames: int, width: int, height: int, seed: int = 0) -> Path:
    """An h264 clip of moving textured shapes over a gradient (``frames`` frames at 25 frames/s)."""
    import av

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
    from ..media.video import EncodeSettings, SegmentWriter, open_backend, probe

    info = probe(source)
    with SegmentWriter(path, info, info.width, info.height, EncodeSettings(crf=12, preset="veryfast")) as writer:
        for i, frame in enumerate(open_backend("pyav").frames(source, info)):
            if i >= frames:
                break
            writer.write(frame.rgb, frame.pts)
    return path


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where it cannot. The heap
    memory the earlier stages freed is handed back to the system first (the jobs tell glibc to keep
    freed memory, ``compute.device.tune_for``), so that the peak is the job's own."""
    from ..compute.cpu import release_freed_heap

    gc.collect()
    release_freed_heap()
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


def output_files(folder: Path) -> dict[str, bytes]:
    """Final outputs (not temporary files) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}
