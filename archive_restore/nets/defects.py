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
    """Luma (N, 1, H, W) in [0, 1] -> damage logits (N, 1, H, W). ``depth`` scales, each half the size of the
    one before with twice the features (what it sees around a pixel grows with it: a tear's plain inside is
    told from paper only from far enough); H and W any size (padded inside)."""

    def __init__(self, features: int = 16, depth: int = 3):
        super().__init__()
        self.config = {"features": features, "depth": depth}
        widths = [features * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList(_block(a, b) for a, b in zip([1, *widths], widths))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1)))
        self.out = nn.Conv2d(features, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        step = 2 ** (len(self.down) - 1)
        x = F.pad(x, (0, -w % step, 0, -h % step), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        return self.out(x)[..., :h, :w]
