"""The defect detector: a small U-Net on a picture's luma that gives, per pixel, the logit of "damage"
(scratch, crack, dust, crease, tear). Fully convolutional, so it runs at the picture's own resolution
(in tiles, ``pipeline.defects``); trained by ``train defects`` on synthetic damage (``degrade.defects``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(b, b, 3, 1, 1), nn.LeakyReLU(0.1))


class DefectNet(nn.Module):
    """Luma (N, 1, H, W) in [0, 1] -> damage logits (N, 1, H, W). Three scales; H and W any size (padded to
    a multiple of 4 inside)."""

    def __init__(self, features: int = 16):
        super().__init__()
        self.config = {"features": features}
        f = features
        self.enc1, self.enc2, self.enc3 = _block(1, f), _block(f, 2 * f), _block(2 * f, 4 * f)
        self.dec2, self.dec1 = _block(6 * f, 2 * f), _block(3 * f, f)
        self.out = nn.Conv2d(f, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.out(d1)[..., :h, :w]
