"""The defect detector: a small U-Net on a picture's luma that gives, per pixel, the logit of "damage"
(scratch, crack, dust, crease, tear). Fully convolutional, so it runs at the picture's own resolution
(in tiles, ``pipeline.defects``); trained by ``train defects`` on synthetic damage (``degrade.defects``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import unet_levels, unet_pass


class DefectNet(nn.Module):
    """Luma (N, 1, H, W) in [0, 1] -> damage logits (N, 1, H, W). ``depth`` scales, each half the size of the
    one before with twice the features (what it sees around a pixel grows with it: a tear's plain inside is
    told from paper only from far enough); H and W any size (padded inside)."""

    def __init__(self, features: int = 16, depth: int = 3):
        super().__init__()
        self.config = {"features": features, "depth": depth}
        self.down, self.up = unet_levels(features, depth, channels=1)
        self.out = nn.Conv2d(features, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = unet_pass(x, self.down, self.up, lambda t: F.max_pool2d(t, 2),
                      lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest"))
        return self.out(y)[..., :h, :w]
