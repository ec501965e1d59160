"""Stage 4 — the cleanup. ``Cleanup(lq, z)`` learns to turn a damaged picture into the clean picture
at the same size (the HQ crop area-reduced to the LQ's size), the input a strong upscaler expects.

Pairs are those of the restorer stage (``RestorerStep.pairs``): natural crops under a sampled
degradation with the code of a face under the same degradation, or DegSynth driven by codes of
real face pairs. So that a wrong code costs little, a share of the rows is trained with an
imperfect code instead: the blind code of the LQ itself, another row's code (a different
degradation), or the right code with noise added. The target stays the clean picture: the network
learns to trust the code where the picture agrees with it, and to do no harm where it does not.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .loop import step_rng
from .sr_stage import RestorerStep

#: Share of rows per kind of code: the face code, the blind code, a neighbour's code, a noisy code.
CODE_MIX = {"face": 0.55, "blind": 0.2, "neighbour": 0.1, "noisy": 0.15}
NOISE = 0.5  # noisy codes: Gaussian noise of this many times the batch's per-dimension spread
MAX_GRAD_NORM = 1.0  # without clipping, a first run diverged at step ~650 (L1 0.05 -> 700)


def clean_target(hq: torch.Tensor, scale: int) -> torch.Tensor:
    """The clean picture at the LQ's size: the HQ crop area-reduced by ``scale``."""
    return F.interpolate(hq, scale_factor=1 / scale, mode="area")


def imperfect_codes(rng: np.random.Generator, z: torch.Tensor, z_blind: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Per row, the face code or an imperfect one (``CODE_MIX``); returns the codes and their kinds."""
    kinds = list(rng.choice(list(CODE_MIX), size=z.shape[0], p=list(CODE_MIX.values())))
    spread = z.std(dim=0, keepdim=True) if z.shape[0] > 1 else torch.ones_like(z)
    noise = torch.from_numpy(rng.standard_normal(z.shape).astype(np.float32)).to(z.device) * spread * NOISE
    neighbour = z.roll(1, dims=0)
    rows = [{"face": z[i], "blind": z_blind[i], "neighbour": neighbour[i], "noisy": z[i] + noise[i]}[k]
            for i, k in enumerate(kinds)]
    return torch.stack(rows), kinds


class CleanupStep:
    def __init__(self, model: nn.Module, optimizer, pairs: RestorerStep, blind: nn.Module, scale: int = 4):
        self.model, self.optimizer, self.pairs, self.blind, self.scale = model, optimizer, pairs, blind, scale

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lq, code, clean) on the model's device: the restorer stage's pairs with imperfect codes mixed in."""
        lq, z, hq = (t.to(self.device) for t in self.pairs.pairs(step))
        size = self.blind.input_size
        z_blind = self.blind(F.interpolate(lq, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1))
        codes, _ = imperfect_codes(step_rng(self.pairs.seed + 1, step), z, z_blind)
        return lq, codes, clean_target(hq, self.scale)

    def __call__(self, step: int) -> dict[str, float]:
        lq, z, clean = self.batch(step)
        loss = F.l1_loss(self.model(lq, z), clean)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        return {"l1": loss.detach(), "l1_input": F.l1_loss(lq, clean).detach()}
