"""Stage 3 — BlindDegEncoder distilled to the paired codes: from the LQ image alone, predict the
code DegEncoder gives the (LQ, HQ) pair. Trained on faces and natural patches alike, since at run
time it reads faces without a restorer and whole frames without faces.

Matching the teacher's codes alone is not the goal: a code close to the teacher's by mean squared
error can still restore worse, because CondSR is far more sensitive to some directions of the code
than to others. So the blind code of each natural patch also goes through the frozen CondSR, and the
L1 error of that restoration is part of the loss. The code-matching term keeps the blind code in the
teacher's code space (faces, shot codes and paired codes are compared and averaged there)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batches import model_device, shared_batch
from .data import FaceBank, ImageBank
from .loop import step_rng

RESTORE_WEIGHT = 100.0  # L1 of a restoration (~0.09) x 100 outweighs code MSE (~4); 20 restored slightly worse


class DistillStep:
    def __init__(self, blind: nn.Module, optimizer, teacher: nn.Module, restorer: nn.Module, faces: FaceBank,
                 naturals: ImageBank, seed: int, batch: int = 16, restore_weight: float = RESTORE_WEIGHT):
        self.blind, self.optimizer, self.teacher, self.restorer = blind, optimizer, teacher, restorer
        self.faces, self.naturals, self.seed, self.batch = faces, naturals, seed, batch
        self.restore_weight = restore_weight

    def __call__(self, step: int) -> dict[str, float]:
        rng = step_rng(self.seed, step)
        b = shared_batch(rng, self.faces, self.naturals, self.batch, crop=self.faces.faces[0].shape[0],
                         device=model_device(self.blind))
        nat_lq_up = F.interpolate(b.nat_lq, size=b.nat_hq.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.no_grad():
            target_face = self.teacher(b.face_lq_up, b.face_hq)
            target_nat = self.teacher(nat_lq_up, b.nat_hq)
        code_nat = self.blind(nat_lq_up)
        mse = F.mse_loss(self.blind(b.face_lq_up), target_face) + F.mse_loss(code_nat, target_nat)
        l1 = F.l1_loss(self.restorer(b.nat_lq, code_nat), b.nat_hq)
        loss = mse + self.restore_weight * l1
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": mse.detach(), "l1": l1.detach()}
