"""Stage 1 — degradation learning (ReDegNet): DegEncoder and DegSynth together.

Each row of a batch samples one degradation and applies it to a face and to a natural patch.
- the face's code must let DegSynth turn the natural HQ patch into its LQ version (the code
  carries the degradation across contents);
- face and natural codes of the same degradation must find each other among the batch (InfoNCE);
- a linear head must read the known degradation parameters from the code (a direct signal early);
- real LQ/HQ face pairs are reconstructed through their own codes (real degradations enter here).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..degrade import PARAM_DIM
from .batches import model_device, real_pair_batch, shared_batch
from .data import FaceBank, ImageBank, RealPair
from .loop import step_rng


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` must match row i of ``b`` among all rows. Codes are centred
    on the batch mean first, so what they share (the common offset) cannot hide what differs."""
    centre = torch.cat([a, b]).mean(dim=0, keepdim=True)
    a, b = a - centre, b - centre
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def spread_loss(z: torch.Tensor) -> torch.Tensor:
    """Keeps every code dimension varying across a batch (std >= 1): guards against collapse to a
    constant code, which a regression head alone would tolerate."""
    return F.relu(1.0 - z.std(dim=0)).mean()


def high_freq_std(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel std of the high-pass residual: how much noise / grain / detail there is."""
    return (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).flatten(2).std(dim=2)


def synthesis_loss(synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(synth, target) + F.l1_loss(high_freq_std(synth), high_freq_std(target))


class DegradationStep:
    """One optimisation step of stage 1; returns its losses."""

    def __init__(self, encoder: nn.Module, synth: nn.Module, param_head: nn.Module, optimizer, faces: FaceBank,
                 naturals: ImageBank, real_pairs: list[RealPair], seed: int, batch: int = 16, real_batch: int = 4):
        self.encoder, self.synth, self.param_head, self.optimizer = encoder, synth, param_head, optimizer
        self.faces, self.naturals, self.real_pairs = faces, naturals, real_pairs
        self.seed, self.batch, self.real_batch = seed, batch, real_batch

    def __call__(self, step: int) -> dict[str, float]:
        rng = step_rng(self.seed, step)
        device = model_device(self.encoder)
        b = shared_batch(rng, self.faces, self.naturals, self.batch, crop=self.faces.faces[0].shape[0], device=device)
        nat_lq_up = F.interpolate(b.nat_lq, size=b.nat_hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        z_face = self.encoder(b.face_lq_up, b.face_hq)
        z_nat = self.encoder(nat_lq_up, b.nat_hq)
        losses = {
            "param": F.mse_loss(self.param_head(z_face), b.params) + F.mse_loss(self.param_head(z_nat), b.params),
            "nce": info_nce(z_face, z_nat),
            "spread": spread_loss(torch.cat([z_face, z_nat])),
            "synth": synthesis_loss(self.synth(b.nat_hq, z_face), nat_lq_up),
        }
        if self.real_pairs:
            lq, hq = real_pair_batch(rng, self.real_pairs, self.real_batch, device)
            losses["real"] = synthesis_loss(self.synth(hq, self.encoder(lq, hq)), lq)
        total = 4.0 * losses["param"] + losses["nce"] + losses["spread"] + sum(
            v for k, v in losses.items() if k in ("synth", "real"))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}


def make_param_head(code_dim: int) -> nn.Module:
    return nn.Linear(code_dim, PARAM_DIM)


def code_spread(encoder: nn.Module, faces: FaceBank, naturals: ImageBank, seed: int, n: int = 32) -> dict[str, float]:
    """Check the codes actually vary: mean distance between codes of different degradations vs. the
    mean distance between a face's and a natural patch's codes under the same degradation."""
    rng = np.random.default_rng([seed, 999_999])
    device = model_device(encoder)
    b = shared_batch(rng, faces, naturals, n, crop=faces.faces[0].shape[0], device=device)
    nat_lq_up = F.interpolate(b.nat_lq, size=b.nat_hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        zf, zn = encoder(b.face_lq_up, b.face_hq), encoder(nat_lq_up, b.nat_hq)
    dist = torch.cdist(zf, zn)
    same = dist.diag().mean()
    other = (dist.sum() - dist.diag().sum()) / (n * n - n)
    top1 = (dist.argmin(dim=1) == torch.arange(n, device=device)).float().mean()
    return {"same_deg_dist": float(same), "other_deg_dist": float(other), "retrieval_top1": float(top1)}
