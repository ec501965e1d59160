"""DegSynth (ReDegNet's SynNet): an HQ image and a code -> the LQ version of that image at HQ size.

Content enters only through a convolutional encoder of the HQ image; the degradation enters only
through the code, as StyleGAN2-style weight modulation of the layers that follow, plus a noise
injection whose per-channel strength the code sets (grain and sensor noise are random fields that a
deterministic network could not otherwise produce). The network works at 1/``factor`` of the input
resolution — the LQ image's own resolution — and returns the result resized back to the HQ size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ModulatedConv2d, act


class DegSynth(nn.Module):
    def __init__(self, code_dim: int = 128, width: int = 32, layers: int = 3, factor: int = 4):
        super().__init__()
        self.config = {"code_dim": code_dim, "width": width, "layers": layers, "factor": factor}
        self.code_dim, self.factor = code_dim, factor
        down = []
        ch = 3
        for _ in range(factor.bit_length() - 1):  # factor 4 -> two stride-2 stages
            down += [nn.Conv2d(ch, width, 4, stride=2, padding=1), act()]
            ch = width
        self.content = nn.Sequential(*down, nn.Conv2d(ch, width, 3, padding=1), act())
        self.mod = nn.ModuleList(ModulatedConv2d(code_dim, width, width) for _ in range(layers))
        self.noise_strength = nn.Linear(code_dim, width)
        nn.init.zeros_(self.noise_strength.weight)
        nn.init.zeros_(self.noise_strength.bias)
        self.to_rgb = ModulatedConv2d(code_dim, width, 3, kernel=1, demodulate=False)
        nn.init.zeros_(self.to_rgb.weight)

    def forward(self, hq: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        height, width = hq.shape[-2:]
        small = F.interpolate(hq, scale_factor=1 / self.factor, mode="area") if self.factor > 1 else hq
        x = self.content(hq)
        x = x[..., : small.shape[-2], : small.shape[-1]]
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        strength = self.noise_strength(z).unsqueeze(-1).unsqueeze(-1)
        for i, layer in enumerate(self.mod):
            x = act()(layer(x, z))
            if i == 0:
                x = x + strength * noise
        lq_small = small + self.to_rgb(x, z)
        if self.factor == 1:
            return lq_small
        return F.interpolate(lq_small, size=(height, width), mode="bicubic", align_corners=False)
