"""Choosing the compute device, what it computes in, and recognising when it runs out of memory."""
from __future__ import annotations

import glob
import sys
from typing import Callable

import torch

from ..errors import DeviceError
from .cpu import cpu_threads, tune_cpu_memory

Notify = Callable[[str], None]


def _say(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def gpu_present() -> bool:
    """An NVIDIA GPU's device node exists, whether or not this torch build can use it."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def resolve_device(name: str = "auto", notify: Notify | None = None) -> torch.device:
    """``auto`` -> the first CUDA device when one is usable, else the CPU (saying why when a GPU is
    there but torch cannot use it); ``cuda`` / ``cuda:N`` -> that device, checked usable, or an error
    that says what to do; ``cpu`` -> the CPU."""
    notify = notify or _say
    if name == "auto":
        if torch.cuda.is_available():
            return _usable(torch.device("cuda", 0))
        if gpu_present():
            notify(f"a GPU is present but this torch build cannot use it (torch {torch.__version__}, built for "
                   f"CUDA {torch.version.cuda or 'none'}; often a driver older than the build needs): running on "
                   "the CPU. Install a torch build that matches the driver to use the GPU.")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (" (a GPU is present, but this torch build cannot use it: check that the NVIDIA driver is as "
                   f"new as torch {torch.__version__}'s CUDA {torch.version.cuda} needs)") if gpu_present() else ""
            raise DeviceError(f"--device {name} was asked for, but no CUDA device is usable here{why}; "
                              "use --device cpu or auto")
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            names = ", ".join(f"cuda:{i}" for i in range(count))
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device{'s' * (count != 1)} ({names})")
        return _usable(torch.device("cuda", index))
    if device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def _usable(device: torch.device) -> torch.device:
    """``device`` after a first allocation on it, or a DeviceError that says what failed."""
    try:
        torch.zeros(1, device=device)
    except Exception as exc:  # driver too old for the build, a GPU in exclusive use by another process...
        raise DeviceError(f"{device} cannot be used: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}; "
                          "use --device cpu, or another --device cuda:N") from exc
    return device


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    """``torch.OutOfMemoryError`` exists from torch 2.5; before, ``torch.cuda.OutOfMemoryError``."""
    found = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple(t for t in found if isinstance(t, type))


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure on any torch version: the OutOfMemoryError types, and the RuntimeErrors a
    failed pinned-host or cuDNN workspace allocation raises ("CUDA error: out of memory")."""
    if isinstance(exc, _out_of_memory_types()):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def bf16_native(device: torch.device) -> bool:
    """bf16 convolutions in hardware (sm80 and later): below that cuDNN emulates them, slowly."""
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation: judge by the compute capability
        return torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """What the convolutional networks compute in on ``device``: bf16 on sm80+, fp16 on older GPUs
    (T4, V100, RTX 20xx), fp32 (None: no autocast) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if bf16_native(device) else torch.float16


def tune_for(device: torch.device) -> None:
    """Process settings for inference on ``device``. CPU: glibc's malloc told to keep some freed memory
    for the next frame (``tune_cpu_memory``), then torch's thread count (``cpu_threads``). CUDA: the
    device made current (``--device cuda:1`` means GPU 1 for every library) and cuDNN's autotuner on,
    since every frame of a job has the same size."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        return
    tune_cpu_memory()
    torch.set_num_threads(cpu_threads())
