"""``archive-restore bench runtime``: the upscaler's CPU runtimes side by side on the same input.

Per upscaler file (default: every known upscaler present, see ``archive-restore models list``) and per
runtime of :mod:`archive_restore.upscalers.runtime` plus ``torch-compile`` (``torch.compile`` of the
module, measured here only: a compile on the first call of every process, longer for each new input
size), on one seeded ``size`` x ``size`` picture with torch's current thread count. The runtimes are
raced (``upscalers.runtime.race``): a warm-up call each, then ``runs`` rounds of one call each in turn.

``seconds``             median seconds per forward of the ``runs`` timed calls
``runs``                every timed call's seconds
``first_call_seconds``  the warm-up call (for torch-compile: the compile)
``max_diff``            max |output - torch fp32 output|; a match is within ``upscalers.runtime.TOLERANCE``
``psnr``                PSNR of the output against torch fp32's, dB (100: equal)
``note``                why a runtime did not run (package missing, not an ncnn file...)

The reduced-precision runtimes (``half``, ``bf16``) run where this CPU computes their precision fast, else
their row says why. Per upscaler ``fastest`` (the fastest runtime that matches torch fp32 on this input) and
``auto`` (what ``load_upscaler(..., runtime="auto")`` runs on this machine at precision ``auto``: the
remembered probe answer on the probe picture, or a new probe; a reduced precision only where it passes
``upscalers.runtime.pick``'s check).
"""
from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from ..upscalers import runtime as rt
from ..upscalers.upscaler import available_upscalers, load_upscaler, resolve_upscaler

COMPILE = "torch-compile"
ROWS = rt.RUNTIMES + rt.OPT_IN + (COMPILE,)


class CompiledRuntime:
    """``torch.compile`` of the module (inductor, static shapes), compiled on the first call."""

    name = COMPILE

    def __init__(self, model: torch.nn.Module):
        self.model = torch.compile(model, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


def bench_one(path: Path, size: int, runs: int, compile_too: bool, tick) -> dict:
    """Every runtime on one upscaler file, raced on one input: a row each, the fastest that matches,
    and auto's choice."""
    upscaler = load_upscaler(resolve_upscaler(str(path)), "cpu", runtime="torch", progress=False)
    model, weights = upscaler.model, rt.Weights(path, upscaler.ref.sha256 or "")
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    reference = rt.TorchRuntime(model)(x).float()
    built, absent = rt.runners(model, weights, reduced=True)  # reduced: where their precision is fast here
    if compile_too:
        built[COMPILE] = CompiledRuntime(model)
    else:
        absent.append(rt.Measured(COMPILE, None, None, "not measured (--no-compile)"))
    rows = {row.runtime: row for row in rt.race(built, x, reference, runs, statistics.median, tick) + absent}
    for _ in absent:
        tick()
    figures = {}
    for name in ROWS:
        row = rows[name]
        note = row.note or (f"first call (the compile) {row.first_call:.1f} s" if name == COMPILE else "")
        figures[name] = {"seconds": row.seconds, "runs": list(row.runs), "max_diff": row.max_diff, "note": note,
                         "first_call_seconds": row.first_call, "psnr": row.psnr}
    return {"file": str(path), "architecture": upscaler.architecture, "runtimes": figures,
            "fastest": rt.fastest([row for name, row in rows.items() if name in rt.RUNTIMES]),
            "auto": rt.choose(model, weights, progress=False)}


def default_files() -> list[Path]:
    return [Path(ref.path) for ref in available_upscalers() if ref.path]


def run_runtime(files: Sequence[Path], size: int = 128, runs: int = 3, compile_too: bool = True,
                progress: bool = True) -> dict:
    """The figures of every runtime on every upscaler file (the default: every known one present)."""
    files = list(files) or default_files()
    result = {"size": size, "runs": runs, "threads": torch.get_num_threads(), "cpu": rt.cpu_name(),
              "machine": platform.machine(), "tolerance": rt.TOLERANCE, "upscalers": {}}
    with tqdm(total=len(files) * (runs + len(ROWS)), desc="bench runtime", disable=not progress) as bar:
        for path in files:
            key = path.stem if path.stem not in result["upscalers"] else f"{path.stem}@{path.parent.name}"
            bar.set_postfix_str(key)
            result["upscalers"][key] = bench_one(Path(path), size, runs, compile_too, bar.update)
    return result


def format_table(result: dict) -> str:
    lines = [f"upscaler forward on the CPU, {result['size']}x{result['size']} input, {result['threads']} threads, "
             f"{result['cpu']}; median of {result['runs']} runs after a warm-up"]
    for key, item in result["upscalers"].items():
        lines.append(f"\n{key} ({item['architecture']}, {item['file']})")
        lines.append(f"  {'runtime':<15}{'s/forward':>10}{'max|diff|':>11}{'PSNR dB':>9}  note")
        for name, row in item["runtimes"].items():
            seconds = "-" if row["seconds"] is None else f"{row['seconds']:.3f}"
            diff = "-" if row["max_diff"] is None else f"{row['max_diff']:.1e}"
            psnr = "-" if row.get("psnr") is None else f"{row['psnr']:.1f}"
            lines.append(f"  {name:<15}{seconds:>10}{diff:>11}{psnr:>9}  {row['note']}".rstrip())
        lines.append(f"  fastest that matches torch (<= {result['tolerance']:g}): {item['fastest']}; "
                     f"auto picks: {item['auto']}")
    return "\n".join(lines)
