"""Cleanup: the first stage of the restoration stack. An LQ image and its degradation code -> the
same image at the same size with the damage the code describes removed (noise and grain, halftone,
JPEG and codec blocks, blur, fading and colour cast, dust), ready for a strong upscaler.

A residual network: a full-resolution head, a trunk at half resolution (pixel-unshuffled, so its
receptive field covers JPEG blocks and halftone screens at little cost), every trunk block
modulated by the code through FiLM, a full-resolution tail, and the input added back, so the
network only learns the correction. The code also sets a global per-channel gain and offset
(``tone``, each bounded to +-0.5 by a tanh), the natural form of a fade or a colour cast. The tone
projection and the tail start at zero, so an untrained Cleanup is the identity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .condsr import CondBlock
from .layers import act

SIZES = {
    "compact": {"width": 48, "blocks": 6},
    "large": {"width": 96, "blocks": 12},
}


class Cleanup(nn.Module):
    def __init__(self, code_dim: int = 128, width: int = 48, blocks: int = 6):
        super().__init__()
        self.config = {"code_dim": code_dim, "width": width, "blocks": blocks}
        self.code_dim, self.scale = code_dim, 1
        self.code_mlp = nn.Sequential(nn.Linear(code_dim, code_dim), act())
        self.head = nn.Conv2d(3, width // 2, 3, padding=1)
        self.down = nn.Conv2d(4 * (width // 2), width, 1)
        self.blocks = nn.ModuleList(CondBlock(width, code_dim) for _ in range(blocks))
        self.up = nn.Conv2d(width, 4 * (width // 2), 1)
        self.tail = nn.Conv2d(width // 2, 3, 3, padding=1)
        self.tone = nn.Linear(code_dim, 6)
        for layer in (self.tail, self.tone):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, lq: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = lq.new_zeros(lq.shape[0], self.code_dim)
        code = self.code_mlp(z.to(lq.dtype))
        height, width = lq.shape[-2:]
        x = F.pad(lq, (0, width % 2, 0, height % 2), mode="replicate")
        full = act()(self.head(x))
        x = self.down(F.pixel_unshuffle(full, 2))
        skip = x
        for block in self.blocks:
            x = block(x, code)
        x = F.pixel_shuffle(self.up(x + skip), 2) + full
        residual = self.tail(act()(x))[..., :height, :width]
        gain, offset = (0.5 * torch.tanh(self.tone(code))).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return lq * (1 + gain) + offset + residual


def build_cleanup(size: str = "compact", code_dim: int = 128) -> Cleanup:
    """The cleanup network at a named size: ``compact`` for CPU, ``large`` for GPU."""
    return Cleanup(code_dim=code_dim, **SIZES[size])
