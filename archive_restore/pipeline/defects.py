"""Scratches, cracks, dust, creases and tears in photos: found by our detector, filled by inpainting, before
anything else reads the photo (its faces, its code, the cleanup).

The detector (``nets.defects.DefectNet``, ``models/defects.safetensors``) runs on the photo's luma at its
own resolution, in overlapping tiles; a pixel is damaged where its probability is at least the detector file's
threshold (its header's ``threshold``, chosen by ``bench defects``; ``THRESHOLD`` when it has none).
Spots under ``MIN_AREA`` pixels are dropped, the rest grown by ``GROW`` (the soft edge of a mark) and
filled by OpenCV's inpainting (Telea's method; every channel in 16 bits, so 16-bit photos keep their depth).
No other pixel changes.

The mask of what was filled is kept for the report (``keep_mask``: a 1-bit PNG at the photo's own resolution
in the job's folder, ``masks/``), which lays it over the photo's before/after slider on request.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..jobs.runner import atomic_output
from ..nets import load_checkpoint
from ..weights.folders import find_model

THRESHOLD = 0.5  # a detector file's threshold when its header names none
MIN_AREA = 4
GROW = 1
INPAINT_RADIUS = 5
TILE, OVERLAP = 512, 32
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
MASKS = "masks"  # the job folder's sub-folder of repair masks


class DefectRepair:
    """The detector on a device, and the repair of what it finds."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", threshold: float = THRESHOLD):
        self.model, self.device, self.threshold = model.eval(), torch.device(device), threshold

    @classmethod
    def load(cls, dirs: list[Path], device: torch.device | str = "cpu", threshold: float | None = None) -> DefectRepair:
        """The detector from the models folders (ModelNotFoundError, saying where it was looked for, without), at
        ``threshold``, else its file's own."""
        ckpt = load_checkpoint(find_model("defects", dirs), device, expect="DefectNet")
        return cls(ckpt.model, device, float(ckpt.info.get("threshold", THRESHOLD)) if threshold is None else threshold)

    @torch.inference_mode()
    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """Per pixel, the probability of damage (HxW float32) of an HxWx3 float picture in [0, 1]."""
        luma = np.ascontiguousarray(rgb[..., :3] @ LUMA, np.float32)
        h, w = luma.shape
        out = np.zeros((h, w), np.float32)
        step = TILE - 2 * OVERLAP
        for y in range(0, h, step):
            for x in range(0, w, step):
                y0, x0 = max(0, y - OVERLAP), max(0, x - OVERLAP)
                y1, x1 = min(h, y + step + OVERLAP), min(w, x + step + OVERLAP)
                tile = torch.from_numpy(luma[y0:y1, x0:x1])[None, None].to(self.device)
                p = torch.sigmoid(self.model(tile)).float().cpu().numpy()[0, 0]
                out[y:min(h, y + step), x:min(w, x + step)] = p[y - y0:y - y0 + min(step, h - y),
                                                                x - x0:x - x0 + min(step, w - x)]
        return out

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        return tidy_mask(self.probability(rgb) >= self.threshold, MIN_AREA, GROW)

    def repair(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the picture with its damage filled, the mask); the picture itself when nothing is found."""
        mask = self.mask(rgb)
        if not mask.any():
            return rgb, mask
        return inpaint(rgb, mask), mask


def tidy_mask(found: np.ndarray, min_area: int, grow: int) -> np.ndarray:
    """A detector's mask (HxW bool) without its spots of fewer than ``min_area`` pixels (8-connected), the
    rest grown by ``grow`` pixels (the soft edge of a mark)."""
    mask = found.astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
    mask[np.isin(labels, small[small > 0])] = 0
    if grow and mask.any():
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return mask.astype(bool)


def inpaint(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` (HxWxC float in [0, 1]) with the ``mask``'s pixels filled from around them (Telea), channel by
    channel in 16 bits (OpenCV's float inpainting returns values far outside the picture's: -1.0 to 1.6 for a
    0.2/0.5 picture, here); other pixels unchanged."""
    marks = mask.astype(np.uint8)
    out = rgb.copy()
    for c in range(rgb.shape[2]):
        levels = (np.clip(rgb[..., c], 0, 1) * 65535 + 0.5).astype(np.uint16)
        filled = cv2.inpaint(levels, marks, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        out[..., c] = filled.astype(np.float32) / 65535
    out[~mask] = rgb[~mask]
    return out


def mask_file(key: str) -> str:
    """Where the repair mask of the item ``key`` is kept, relative to the job's folder: named by a hash of the
    key, as keys hold folders and any character."""
    return f"{MASKS}/{hashlib.sha1(key.encode()).hexdigest()[:20]}.png"


def keep_mask(job_dir: Path, key: str, mask: np.ndarray) -> str | None:
    """Keep the item ``key``'s repair mask (HxW bool) for the report, as a 1-bit PNG written atomically; its
    path relative to ``job_dir``, or None when nothing was repaired (an earlier mask of the item is removed)."""
    path = job_dir / mask_file(key)
    if not mask.any():
        path.unlink(missing_ok=True)
        return None
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(mask, bool)).save(tmp, format="PNG")
    return mask_file(key)
