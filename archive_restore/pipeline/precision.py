"""The precision a job computes in, chosen once per machine and kept: a resumed job stays byte-identical.

On the CPU, ``auto`` picks the upscaler's runtime by measuring (``upscalers.runtime``: a reduced precision,
fp16 or bf16, where this machine computes it fast and its output passes the check) and the stack's
faithful branch measures the CPU too (``stack.faithful_dtype``). Measured afresh, a passing load could
tip either choice the other way between two runs of the same job, and the outputs made after a kill would
then differ from those before it. So the first run of a job records what its engine computed in, with
the machine it ran on, in the job's folder (``precision.json``); a later run on the same kind of machine
(the same CPU model and precision features, the same torch, the same device) at precision ``auto`` uses
exactly that. On another machine, or with ``--precision fp32``, the engine chooses for itself and the job
says once what changed and why.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..compute.cpu import cpu_features, cpu_name
from ..compute.device import resolve_device
from ..errors import UsageError
from ..jobs.runner import atomic_output
from ..upscalers.runtime import precision_choice
from .engine import Engine, EngineOptions

PIN_FILE = "precision.json"


def machine_id(device: torch.device) -> str:
    """What a job's precision depends on besides its options: the device, and on the CPU its model and
    precision features; torch's version."""
    if device.type == "cuda":
        where = f"{device} {torch.cuda.get_device_name(device)}"
    else:
        where = f"cpu {cpu_name()} [{cpu_features()}]"
    return f"{where} torch {torch.__version__}"


def read_pin(job_dir: Path) -> dict | None:
    """The precision a job first ran with (``machine``, ``upscaler_runtime``, ``faithful``), or None."""
    try:
        pin = json.loads((job_dir / PIN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return pin if isinstance(pin, dict) and {"machine", "upscaler_runtime", "faithful"} <= pin.keys() else None


def write_pin(job_dir: Path, pin: dict) -> None:
    with atomic_output(job_dir / PIN_FILE) as tmp:
        tmp.write_text(json.dumps(pin, indent=1))


def describe(pin: dict) -> str:
    upscaler = pin["upscaler_runtime"]
    return (f"upscaler runtime {upscaler}, " if upscaler else "") + f"faithful branch {pin['faithful']}"


def job_engine(options: EngineOptions, job_dir: Path, notify: Callable[[str], None],
               make: Callable[[EngineOptions], Engine] = Engine) -> Engine:
    """The engine for a job's items: at precision ``auto`` on the machine the job first ran on, with the
    runtime and precision recorded then; otherwise as the engine chooses (recorded when it is the job's
    first run), saying once what differs from the job's first run and why."""
    pin = read_pin(job_dir)
    here = machine_id(resolve_device(options.device, notify=lambda _message: None))
    asked = precision_choice(options.precision)
    said = False
    if pin is not None and pin["machine"] == here and asked == "auto":
        try:
            recorded = replace(options, upscaler_runtime=pin["upscaler_runtime"] or "auto", faithful=pin["faithful"],
                               runtime_recorded=pin["upscaler_runtime"] is not None)
            engine = make(recorded)
        except UsageError as exc:  # e.g. the runtime's package was uninstalled since
            notify(f"this job's recorded precision ({describe(pin)}) cannot be used now: {exc}; choosing again, "
                   "so the outputs made from here on may differ slightly from the earlier ones")
            engine, said = make(options), True
    else:
        engine = make(options)
    now = {"machine": here, **engine.precisions()}
    if pin is None:
        write_pin(job_dir, now)
    elif not said and any(now[key] != pin[key] for key in ("upscaler_runtime", "faithful")):
        why = ("--precision fp32 was asked for" if asked == "fp32" else
               f"this machine ({here}) is not the one it first ran on ({pin['machine']}), and precision is "
               "chosen by measuring the machine")
        notify(f"this job first ran with {describe(pin)}; it now runs with {describe(now)}: {why}. Outputs made "
               "from here on may differ from the earlier ones by about one 8-bit level")
    return engine
