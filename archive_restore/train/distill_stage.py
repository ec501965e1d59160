"""Stage 3 — BlindDegEncoder distilled to the paired codes: from the LQ image alone, predict the
code DegEncoder gives the (LQ, HQ) pair. Trained on faces and natural patches alike, since at run
time it reads faces without a restorer and whole frames without faces."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batches import shared_batch
from .data import FaceBank, ImageBank
from .loop import step_rng


class DistillStep:
    def __init__(self, blind: nn.Module, optimizer, teacher: nn.Module, faces: FaceBank, naturals: ImageBank,
                 seed: int, batch: int = 16):
        self.blind, self.optimizer, self.teacher = blind, optimizer, teacher
        self.faces, self.naturals, self.seed, self.batch = faces, naturals, seed, batch

    def __call__(self, step: int) -> dict[str, float]:
        rng = step_rng(self.seed, step)
        b = shared_batch(rng, self.faces, self.naturals, self.batch, crop=self.faces.faces[0].shape[0])
        nat_lq_up = F.interpolate(b.nat_lq, size=b.nat_hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.no_grad():
            target_face = self.teacher(b.face_lq_up, b.face_hq)
            target_nat = self.teacher(nat_lq_up, b.nat_hq)
        loss = F.mse_loss(self.blind(b.face_lq_up), target_face) + F.mse_loss(self.blind(nat_lq_up), target_nat)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": float(loss.detach())}
