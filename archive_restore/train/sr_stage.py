"""Stage 2 — the restorer. CondSR learns ``(lq, z) -> hq`` on natural patches where ``z`` comes
from a *face* under the same degradation (the ReDegNet transfer, face -> natural image).

Batches come from the handcrafted degradation pipeline and, a share of the time, from DegSynth
driven by codes of real LQ/HQ face pairs: real degradations, synthesised on natural content.
The unconditioned twin trains on exactly the same batches with the code replaced by zeros.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batches import model_device, real_pair_batch, shared_batch
from .data import FaceBank, ImageBank, RealPair
from .loop import step_rng


class RestorerStep:
    def __init__(self, model: nn.Module, optimizer, encoder: nn.Module, synth: nn.Module | None, faces: FaceBank,
                 naturals: ImageBank, real_pairs: list[RealPair], seed: int, batch: int = 16, crop: int = 128,
                 synth_share: float = 0.25, scale: int = 4):
        self.model, self.optimizer, self.encoder, self.synth = model, optimizer, encoder, synth
        self.scale = scale
        self.faces, self.naturals, self.real_pairs = faces, naturals, real_pairs
        self.seed, self.batch, self.crop, self.synth_share = seed, batch, crop, synth_share

    @torch.no_grad()
    def pairs(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lq, z, hq) for one step — identical for the conditioned net and its twin."""
        rng = step_rng(self.seed, step)
        device = model_device(self.encoder)
        b = shared_batch(rng, self.faces, self.naturals, self.batch, crop=self.crop, device=device)
        use_synth = self.synth is not None and self.real_pairs and rng.random() < self.synth_share
        if use_synth:
            lq_face, hq_face = real_pair_batch(rng, self.real_pairs, self.batch, device)
            z = self.encoder(lq_face, hq_face)
            lq = F.interpolate(self.synth(b.nat_hq, z).clamp(0, 1), scale_factor=1 / self.scale, mode="area")
        else:
            z = self.encoder(b.face_lq_up, b.face_hq)
            lq = b.nat_lq
        return lq, z, b.nat_hq

    def __call__(self, step: int) -> dict[str, float]:
        lq, z, hq = self.pairs(step)
        loss = F.l1_loss(self.model(lq, z), hq)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"l1": loss.detach()}
