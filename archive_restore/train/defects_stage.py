"""The defect detector's stage (``train defects``): HQ photos with synthetic print damage (``degrade.defects``)
drawn at the photo's own size, as ``bench defects`` and real prints have it (a tear or a crease sized to the
photo, not to the crop), then a crop of it through our archive degradation chain at the crop's own size
without its own unlabelled marks (so the detector does not key on clean edges: the damage is blurred, noised
and compressed like the rest of the scan); the detector learns the damage's mask from the crop's luma (BCE
weighted towards the rare damaged pixels, plus soft Dice). A quarter of the crops are taken at a corner of
the photo, where tears and missing corners are."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..degrade.defects import print_damage, scan_degradation

CROP = 128
DETECTOR_DEPTH = 4    # the detector's scales: four see a tear's plain inside from its edges (three did not)
POS_WEIGHT = 4.0      # damaged pixels are few: their BCE counts this much more
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def damaged_example(photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(luma CROPxCROP float32, mask CROPxCROP float32) of one training example made from the clean ``photo``
    (at least CROP px each way): damage drawn over the whole photo (a quarter of the photos none at all: clean
    pictures must come back clean), a crop of it, then a degradation drawn from our chain at scale 1 without its
    dust-and-scratches stage."""
    amount = 0.0 if rng.random() < 0.25 else float(rng.uniform(0.5, 3.0))
    damaged, mask = print_damage(photo, rng, amount) if amount else (photo, np.zeros(photo.shape[:2], bool))
    y, x = crop_at(photo.shape[:2], rng)
    degraded = scan_degradation(rng).apply(np.ascontiguousarray(damaged[y:y + CROP, x:x + CROP]))
    return (degraded @ LUMA).astype(np.float32), mask[y:y + CROP, x:x + CROP].astype(np.float32)


def crop_at(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """The top-left corner of a CROP square in a picture of ``shape``: a quarter of the time at one of its
    corners, else anywhere."""
    h, w = shape
    if rng.random() < 0.25:
        return int(rng.integers(2)) * (h - CROP), int(rng.integers(2)) * (w - CROP)
    return int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))


def batch_of(bank, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [damaged_example(bank.photo(rng), rng) for _ in range(size)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    return x, y


def detector_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, mask, pos_weight=torch.tensor(POS_WEIGHT))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * mask).sum() + 1) / (p.sum() + mask.sum() + 1)
    return bce + dice


class DefectStep:
    """One step: a fresh batch of damaged crops (seeded by the step), the detector's loss, Adam."""

    def __init__(self, model: torch.nn.Module, optimizer, bank, seed: int, batch: int, device: str):
        self.model, self.optimizer, self.bank = model, optimizer, bank
        self.seed, self.batch, self.device = seed, batch, device

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        x, y = batch_of(self.bank, np.random.default_rng([self.seed, 7, step]), self.batch)
        logits = self.model(x.to(self.device))
        loss = detector_loss(logits, y.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}
