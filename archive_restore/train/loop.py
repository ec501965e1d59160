"""What every training stage shares: seeding, resumable state written atomically, a progress bar,
a step budget and a wall-clock budget."""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm


@dataclass
class Budget:
    steps: int
    minutes: float | None = None  # stop early (and resumably) when this much wall time has passed


@dataclass
class RunState:
    """Where a stage stands: its step, accumulated training seconds and recent losses."""

    step: int = 0
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The data stream depends only on (seed, step): a resumed run sees the same batches."""
    return np.random.default_rng([seed, step])


def save_state(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, state: RunState) -> None:
    """Write the training state (our own file, trusted) to a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "step": state.step,
        "seconds": state.seconds,
        "losses": state.losses,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> RunState:
    """Resume from ``path`` if it exists (``weights_only`` loading: tensors and plain values only)."""
    if not path.exists():
        return RunState()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    optimizer.load_state_dict(payload["optimizer"])
    return RunState(step=payload["step"], seconds=payload["seconds"], losses=payload["losses"])


def cosine_lr(base: float, step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``base``. A plain float: the optimizer state keeps
    it, and a numpy scalar there would make the saved state unloadable with ``weights_only``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return float(base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))))


def run_steps(
    name: str,
    budget: Budget,
    state: RunState,
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    step_fn: Callable[[int], dict[str, torch.Tensor]],
    checkpoint: Callable[[RunState], None],
    every: int = 100,
) -> RunState:
    """Call ``step_fn(step)`` until the step budget or the time budget is spent, checkpointing every
    ``every`` steps and at the end. ``step_fn`` does forward, backward and returns named losses."""
    start = time.monotonic()
    smooth: dict[str, float] = dict(state.losses)
    bar = tqdm(total=budget.steps, initial=state.step, desc=name, unit="step", dynamic_ncols=True)
    try:
        while state.step < budget.steps:
            if budget.minutes is not None and time.monotonic() - start > budget.minutes * 60:
                break
            for group in optimizer.param_groups:  # a group's own "lr_scale" (a discriminator's) multiplies it
                group["lr"] = cosine_lr(base_lr, state.step, budget.steps) * group.get("lr_scale", 1.0)
            t0 = time.monotonic()
            losses = {k: float(v) for k, v in step_fn(state.step).items()}  # the one host sync of a step
            state.seconds += time.monotonic() - t0
            state.step += 1
            smooth = {k: v if k not in smooth else 0.98 * smooth[k] + 0.02 * v for k, v in losses.items()}
            state.losses = smooth
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in smooth.items()})
            if state.step % every == 0:
                checkpoint(state)
    finally:
        bar.close()
    checkpoint(state)
    return state
