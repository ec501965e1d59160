"""Our face restorer's stage (``train faces``): aligned HQ faces (``FaceBank`` at 128, the benchmark's held-out
faces left out), each degraded by a chain drawn from our archive degradation model at scale 2 or 4 (a face of
64 or 32 px in the photo) and resized back to 128; the network learns the HQ face from it with L1."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..degrade import Degradation
from .batches import to_tensor, upsample_to
from .data import FaceBank
from .loop import step_rng

SCALES = (2, 4)  # how much smaller than 128 px the training faces were in their photos
CLIP = 0.5       # the gradient's norm is clipped to this: at lr 1e-3 without it, a run's L1 jumped from 0.080 to 0.30


def face_batch(faces: FaceBank, rng: np.random.Generator, size: int,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(LQ faces resized to the HQ size, HQ faces), (N, 3, 128, 128) each."""
    hq = [faces.sample(rng) for _ in range(size)]
    lq = [np.clip(Degradation.sample(rng, scale=int(rng.choice(SCALES))).apply(f), 0, 1).astype(np.float32)
          for f in hq]
    side = hq[0].shape[0]
    return torch.cat([upsample_to(to_tensor([x], device), side) for x in lq]), to_tensor(hq, device)


class FaceStep:
    """One step: a fresh batch (seeded by the step), L1 to the HQ faces, Adam. ``autocast``: the forward pass in
    this reduced precision (bf16 where the CPU computes it fast: ``compute.cpu.training_autocast_dtype``)."""

    def __init__(self, model: torch.nn.Module, optimizer, faces: FaceBank, seed: int, batch: int, device: str,
                 autocast: torch.dtype | None = None):
        self.model, self.optimizer, self.faces = model, optimizer, faces
        self.seed, self.batch, self.device, self.autocast = seed, batch, device, autocast

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        lq, hq = face_batch(self.faces, step_rng(self.seed, step), self.batch, self.device)
        with torch.autocast(lq.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            out = self.model(lq)
        loss = F.l1_loss(out.float(), hq)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.optimizer.step()
        return {"l1": loss.detach()}
