"""Our own face restorer: a small U-Net on aligned faces (RGB, 128x128) that gives the restored face as a
residual over its input (the LQ face resized to 128). Trained by ``train faces`` on the aligned HQ faces with our
degradation chain at scales 2 and 4, with L1: a faithful restorer, not a generative one (no invented pores or
eyelashes), for where GFPGAN's file cannot be had (``faces.restore.OwnFaceRestorer``, ``--face-restorer ours``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FACE_NET_SIZE = 128  # the aligned face's side the network sees


def _block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(b, b, 3, 1, 1), nn.LeakyReLU(0.1))


class FaceNet(nn.Module):
    """Aligned faces (N, 3, H, W) in [0, 1] -> restored faces, the same size. ``depth`` scales, each half the
    size of the one before with twice the features; at 128 px four scales see the whole face (an eye's shape
    from the other's). H and W any size (padded inside); trained at ``FACE_NET_SIZE``."""

    def __init__(self, features: int = 24, depth: int = 4):
        super().__init__()
        self.config = {"features": features, "depth": depth}
        widths = [features * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList(_block(a, b) for a, b in zip([3, *widths], widths))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1)))
        self.out = nn.Conv2d(features, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        step = 2 ** (len(self.down) - 1)
        y = F.pad(x, (0, -w % step, 0, -h % step), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            y = block(y if i == 0 else F.avg_pool2d(y, 2))
            skips.append(y)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            y = block(torch.cat([F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        return x + self.out(y)[..., :h, :w]
