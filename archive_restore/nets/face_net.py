"""Our own face restorer: a small U-Net on aligned faces (RGB, 128x128) that gives the restored face as a
residual over its input (the LQ face resized to 128). Trained by ``train faces`` on the aligned HQ faces with our
degradation chain at scales 2 and 4, with L1: a faithful restorer, not a generative one (no invented pores or
eyelashes), for where GFPGAN's file cannot be had (``faces.restore.OwnFaceRestorer``, ``--face-restorer ours``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import unet_levels, unet_pass

FACE_NET_SIZE = 128  # the aligned face's side the network sees


class FaceNet(nn.Module):
    """Aligned faces (N, 3, H, W) in [0, 1] -> restored faces, the same size. ``depth`` scales, each half the
    size of the one before with twice the features; at 128 px four scales see the whole face (an eye's shape
    from the other's). H and W any size (padded inside); trained at ``FACE_NET_SIZE``."""

    def __init__(self, features: int = 24, depth: int = 4):
        super().__init__()
        self.config = {"features": features, "depth": depth}
        self.down, self.up = unet_levels(features, depth, channels=3)
        self.out = nn.Conv2d(features, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = unet_pass(x, self.down, self.up, lambda t: F.avg_pool2d(t, 2),
                      lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False))
        return x + self.out(y)[..., :h, :w]
