"""Degradation encoders (ReDegNet's DegNet): from an image pair, or from the LQ image alone, to a code.

The code ``z`` describes what happened to a picture — blur, noise, compression, grain, fading — and
not what it shows: features are pooled into global statistics before the code is formed, and
training asks codes of different contents under the same degradation to agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import act, mean_std_pool


def _trunk(in_ch: int, width: int) -> nn.Sequential:
    """Strided convolutions: 128x128 input -> 16x16 feature map of 2*width channels."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 4, stride=2, padding=1), act(),
        nn.Conv2d(width, width, 3, padding=1), act(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), act(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), act(),
        nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1), act(),
        nn.Conv2d(4 * width, 4 * width, 3, padding=1), act(),
    )


class _CodeHead(nn.Module):
    def __init__(self, width: int, code_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8 * width, 4 * width), act(), nn.Linear(4 * width, code_dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(mean_std_pool(feats))


def fit_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch to ``size`` x ``size`` (area when shrinking, bicubic when enlarging)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bicubic"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)


class DegEncoder(nn.Module):
    """Paired encoder: an aligned LQ face (resized to the HQ size) and its HQ counterpart -> code.

    The network sees the LQ image, the HQ image and their difference, at ``input_size`` pixels.
    """

    def __init__(self, code_dim: int = 128, width: int = 16, input_size: int = 128):
        super().__init__()
        self.config = {"code_dim": code_dim, "width": width, "input_size": input_size}
        self.code_dim, self.input_size = code_dim, input_size
        self.trunk = _trunk(9, width)
        self.head = _CodeHead(width, code_dim)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        lq, hq = fit_to(lq, self.input_size), fit_to(hq, self.input_size)
        return self.head(self.trunk(torch.cat([lq, hq, lq - hq], dim=1)))


class BlindDegEncoder(nn.Module):
    """Blind encoder: the LQ image alone -> a code in the same space as :class:`DegEncoder`'s.

    Used when no face restorer is available or a shot has no face; distilled from the paired codes.
    """

    def __init__(self, code_dim: int = 128, width: int = 16, input_size: int = 128):
        super().__init__()
        self.config = {"code_dim": code_dim, "width": width, "input_size": input_size}
        self.code_dim, self.input_size = code_dim, input_size
        self.trunk = _trunk(3, width)
        self.head = _CodeHead(width, code_dim)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(fit_to(lq, self.input_size)))
