"""CondSR: the restorer. An LQ image and a degradation code -> the restored image, x4 native.

A residual convolutional network on the LQ grid, every block modulated by the code through FiLM,
a pixel-shuffle upsampler and a bicubic skip, so the network only learns what bicubic misses.
``conditioned=False`` builds the unconditioned twin (same layers; the code is replaced by zeros),
the baseline the code must beat.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FiLM, act

SIZES = {
    "compact": {"width": 32, "blocks": 5},
    "large": {"width": 64, "blocks": 16},
}


class CondBlock(nn.Module):
    def __init__(self, width: int, code_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.film = FiLM(code_dim, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(act()(self.film(self.conv1(x), z)))


class CondSR(nn.Module):
    def __init__(self, code_dim: int = 128, width: int = 32, blocks: int = 5, scale: int = 4, conditioned: bool = True):
        super().__init__()
        self.config = {"code_dim": code_dim, "width": width, "blocks": blocks, "scale": scale, "conditioned": conditioned}
        self.code_dim, self.scale, self.conditioned = code_dim, scale, conditioned
        self.code_mlp = nn.Sequential(nn.Linear(code_dim, code_dim), act())
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(CondBlock(width, code_dim) for _ in range(blocks))
        self.body_end = nn.Conv2d(width, width, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, lq: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None or not self.conditioned:
            z = lq.new_zeros(lq.shape[0], self.code_dim)
        code = self.code_mlp(z.to(lq.dtype))
        x = self.head(lq)
        skip = x
        for block in self.blocks:
            x = block(x, code)
        x = self.body_end(x) + skip
        base = F.interpolate(lq, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.upsample(x)


def build_condsr(size: str = "compact", code_dim: int = 128, conditioned: bool = True) -> CondSR:
    """The restorer at a named size: ``compact`` for CPU, ``large`` for GPU."""
    return CondSR(code_dim=code_dim, conditioned=conditioned, **SIZES[size])


def restore_at_scale(model: CondSR, lq: torch.Tensor, z: torch.Tensor | None, scale: int) -> torch.Tensor:
    """Run the x4 native network and resize to x1/x2 when asked (area resampling of the x4 result)."""
    out = model(lq, z)
    if scale == model.scale:
        return out
    size = (lq.shape[-2] * scale, lq.shape[-1] * scale)
    return F.interpolate(out, size=size, mode="area")
