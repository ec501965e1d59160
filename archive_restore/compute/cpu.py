"""The CPU as the networks see it, measured rather than assumed: how many threads are worth running now
(``cpu_threads``), which half precision convolves fast enough to use (``cpu_half_dtype``), and glibc's
malloc kept from handing memory back and forth every frame (``tune_cpu_memory``, ``release_freed_heap``)."""
from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CL = torch.channels_last
THREADS_ENV = "ARCHIVE_RESTORE_THREADS"  # threads for the networks, without a probe (a Ray worker gets its CPUs)
HALF_SPEEDUP = 2.0  # half precision on the CPU only where it convolves at least this much faster than fp32


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _conv_seconds(threads: int, repeats: int = 9, dtype: torch.dtype = torch.float32) -> float:
    """Median seconds of one 64-channel 3x3 convolution over 128x128 (about 12 ms on one core here in
    fp32) with ``threads`` intra-op threads, in ``dtype``, channels-last: the networks' own kind of work,
    long enough to see contention."""
    x = torch.randn(1, 64, 128, 128).to(dtype, memory_format=CL)
    w = torch.randn(64, 64, 3, 3).to(dtype, memory_format=CL)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        F.conv2d(x, w, padding=1)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            F.conv2d(x, w, padding=1)
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def fixed_threads() -> int | None:
    """The thread count ``$ARCHIVE_RESTORE_THREADS`` fixes (a positive integer), else None."""
    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


@functools.lru_cache(maxsize=1)
def cpu_threads() -> int:
    """Intra-op threads for the networks on the CPU, measured at start-up rather than assumed: a
    short probe times the same convolution on one thread and on every usable core, and the speed-up
    it sees says how many cores are free now. On a quiet machine that is all of them (the decode and
    encode threads beside the network take little); on a machine loaded by other processes, threads
    beyond the free cores only wait for each other, and a plain one-thread loop would win.
    ``$ARCHIVE_RESTORE_THREADS`` overrides (no probe)."""
    if fixed_threads():
        return fixed_threads()
    cores = usable_cores()
    if cores == 1:
        return 1
    before = torch.get_num_threads()
    try:
        speedup = _conv_seconds(1) / max(_conv_seconds(cores), 1e-9)
    finally:
        torch.set_num_threads(before)
    return threads_for(speedup, cores)


def threads_for(speedup: float, cores: int) -> int:
    """The thread count a probe's speed-up on ``cores`` threads calls for: as many threads as cores
    were seen working, counting a core from 0.4 of its share (measured on this 2-core machine, quiet:
    speed-ups of 1.42-1.7 on 2 threads; with another process busy on a core, a thread beyond the
    free cores only makes the others wait, and the speed-up stays near 1)."""
    return max(1, min(cores, math.floor(speedup + 0.6)))


@functools.lru_cache(maxsize=1)
def half_seconds() -> tuple[float, dict[torch.dtype, float]]:
    """Seconds of one of the networks' convolutions in fp32, and in fp16 and bf16 where this torch build
    convolves them on the CPU, measured once per process, on one thread (what the instructions give, not
    how busy the other cores are). CPUs with AMX (Intel Xeon from Sapphire Rapids on: bf16; Granite
    Rapids: fp16 too) run them several times faster (this project's CPU: fp16 1.1 ms against fp32 6.9 ms);
    AVX-512-BF16 (AMD EPYC) runs bf16 about 5 x faster and emulates fp16, about 100 x slower; older CPUs
    neither."""
    before = torch.get_num_threads()
    try:
        fp32 = _conv_seconds(1, repeats=3)
        seconds = {}
        for dtype in (torch.float16, torch.bfloat16):
            try:
                seconds[dtype] = _conv_seconds(1, repeats=3, dtype=dtype)
            except RuntimeError:  # a build without half-precision CPU convolutions
                continue
    finally:
        torch.set_num_threads(before)
    return fp32, seconds


def half_speedups() -> dict[torch.dtype, float]:
    """How many times faster than fp32 this CPU convolves in each half precision (``half_seconds``): what
    the upscaler's reduced-precision runtimes need before they are worth a try (``upscalers.runtime``)."""
    fp32, seconds = half_seconds()
    return {dtype: fp32 / max(s, 1e-12) for dtype, s in seconds.items()}


def cpu_half_dtype() -> torch.dtype | None:
    """The half precision this CPU convolves in at least ``HALF_SPEEDUP`` times faster than fp32 (fp16, or
    else bf16: ``half_for``; None when neither is), from ``half_seconds``. The stack's faithful branch runs
    in it (``pipeline.stack``)."""
    return half_for(*half_seconds())


def training_autocast_dtype(min_speedup: float = 1.5) -> torch.dtype | None:
    """bf16 when this CPU convolves it at least ``min_speedup`` x faster than fp32 (``half_speedups``), else
    None: what a training stage's forward passes may run in. Never fp16: without loss scaling its range loses
    small gradients, and bf16 keeps fp32's."""
    return torch.bfloat16 if half_speedups().get(torch.bfloat16, 0.0) >= min_speedup else None


def half_for(fp32_seconds: float, half_seconds: dict[torch.dtype, float]) -> torch.dtype | None:
    """fp16 when it beats ``fp32_seconds`` by ``HALF_SPEEDUP`` x (its 10-bit mantissa keeps the stack's
    output within 4e-5 of fp32 on real photos, bf16's 7 bits within 3e-4), else bf16 when that does,
    else None."""
    for dtype in (torch.float16, torch.bfloat16):
        if dtype in half_seconds and half_seconds[dtype] * HALF_SPEEDUP <= fp32_seconds:
            return dtype
    return None


def tune_cpu_memory() -> None:
    """glibc's malloc keeps up to 256 MiB of freed heap instead of handing it back at once, so that a
    frame's large tensors do not page-fault afresh every frame, in at most two arenas shared by the
    threads (decode, network, encode), so that each thread does not keep its own. Measured on a 24-frame
    480x352 -> x4 video job through the SRVGG stack, 2 threads, each in a fresh process (history in
    ``models/MODELS.md``): glibc's defaults peaked at 1294 MB and rendered 0.555 frames/s (11.7 s of
    system time against 1.4 s); keeping up to 1 GiB per arena, as before, peaked at 1569-1633 MB; these
    settings at 1264-1267 MB, 0.674-0.675 frames/s. Torch's own ``THP_MEM_ALLOC_ENABLE=1`` (tensors on
    transparent huge pages) is left to the user: there it rendered 0.726-0.797 frames/s but peaked at
    1463-1565 MB."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(-8, 2)  # M_ARENA_MAX (before the threads that would make more arenas start)
    libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: trim the heap only above 256 MiB free
    libc.mallopt(-2, 64 << 20)  # M_TOP_PAD: grow the heap 64 MiB at a time
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: heap (reused) up to 32 MiB blocks, glibc's maximum


def release_freed_heap() -> None:
    """Hand the heap memory freed so far back to the system (glibc's ``malloc_trim``; nothing elsewhere).
    A video job calls it after each render chunk: the chunk's encoder and decoder buffers, freed, would
    otherwise stay resident beside the next chunk's (a 150-frame job in two chunks peaked at 1738 MB
    against 1344 MB for 50 frames in one)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another (macOS, Windows, musl) and there is nothing to tune."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _cpuinfo(field: str) -> str | None:
    """The first ``field : value`` line's value in ``/proc/cpuinfo``; None where there is none (not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), None)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what the platform says), spaces made underscores."""
    name = _cpuinfo("model name")
    if name:
        return name.replace(" ", "_")
    return platform.processor().replace(" ", "_") or platform.machine()


PRECISION_FLAGS = ("amx_fp16", "amx_bf16", "avx512_fp16", "avx512_bf16", "avx512f", "avx2")


def cpu_features() -> str:
    """The CPU flags that decide which precisions it computes fast (``/proc/cpuinfo``; empty elsewhere):
    with ``cpu_name``, what tells one kind of machine from another (the model name alone does not always)."""
    flags = set((_cpuinfo("flags") or "").split())
    return ",".join(f for f in PRECISION_FLAGS if f in flags)
