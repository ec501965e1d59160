"""Turning sampled degradations and crops into tensors: the pairs every stage trains on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..degrade import Degradation
from .data import FaceBank, ImageBank, RealPair


def to_tensor(images: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 images -> (N, 3, H, W) on ``device`` (the model's: batches are built on the CPU and
    moved here, so a stage on CUDA never meets a CPU tensor)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters are: the device a stage builds its batches on."""
    return next(model.parameters()).device


def upsample_to(lq: torch.Tensor, size: int) -> torch.Tensor:
    """The LQ image resized to the HQ size, the form ReDegNet pairs it with its HQ counterpart in."""
    return F.interpolate(lq, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@dataclass
class SharedBatch:
    """One sampled degradation per row, applied to a face and to a natural crop alike."""

    degradations: list[Degradation]
    params: torch.Tensor       # (B, PARAM_DIM) known parameters of the synthetic degradations
    face_hq: torch.Tensor      # (B, 3, F, F)
    face_lq_up: torch.Tensor   # (B, 3, F, F) LQ face resized back to F
    nat_hq: torch.Tensor       # (B, 3, N, N)
    nat_lq: torch.Tensor       # (B, 3, N/scale, N/scale)


def shared_batch(rng: np.random.Generator, faces: FaceBank, naturals: ImageBank, batch: int, crop: int, scale: int = 4,
                 device: torch.device | str = "cpu") -> SharedBatch:
    """``batch`` rows, each one sampled degradation applied to a face and a natural crop, on ``device``."""
    degs = [Degradation.sample(rng, scale=scale) for _ in range(batch)]
    face_hq = [faces.sample(rng) for _ in range(batch)]
    nat_hq = [naturals.crop(rng, crop) for _ in range(batch)]
    face_lq = to_tensor([np.clip(d.apply(f), 0, 1) for d, f in zip(degs, face_hq)], device)
    nat_lq = to_tensor([np.clip(d.apply(n), 0, 1) for d, n in zip(degs, nat_hq)], device)
    face_hq_t = to_tensor(face_hq, device)
    return SharedBatch(
        degradations=degs,
        params=torch.from_numpy(np.stack([d.params_vector() for d in degs])).to(device),
        face_hq=face_hq_t,
        face_lq_up=upsample_to(face_lq, face_hq_t.shape[-1]),
        nat_hq=to_tensor(nat_hq, device),
        nat_lq=nat_lq,
    )


def real_pair_batch(rng: np.random.Generator, pairs: list[RealPair], batch: int,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(LQ, HQ) tensors of ``batch`` real face pairs drawn at random, flipped at random together, on ``device``."""
    picks = [pairs[i] for i in rng.integers(len(pairs), size=batch)]
    flips = rng.random(batch) < 0.5
    lq = [p.lq[:, ::-1] if f else p.lq for p, f in zip(picks, flips)]
    hq = [p.hq[:, ::-1] if f else p.hq for p, f in zip(picks, flips)]
    return (to_tensor([np.ascontiguousarray(x) for x in lq], device),
            to_tensor([np.ascontiguousarray(x) for x in hq], device))
