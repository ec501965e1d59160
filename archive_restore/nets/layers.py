"""Building blocks shared by the networks: FiLM, StyleGAN2-style modulated convolution, and the U-Net pieces of
the defect detector and our face restorer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class FiLM(nn.Module):
    """Feature-wise affine modulation by a code: ``x * (1 + gamma(z)) + beta(z)``.

    The projection starts at zero, so an untrained FiLM is the identity and early training is stable.
    """

    def __init__(self, code_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(code_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(z).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class ModulatedConv2d(nn.Module):
    """A convolution whose weights are scaled per input channel by a style from the code, then
    demodulated (normalised per output channel), as in StyleGAN2. The code changes *how* the
    features are filtered, never what content enters — content only comes through ``x``."""

    def __init__(self, code_dim: int, in_ch: int, out_ch: int, kernel: int = 3, demodulate: bool = True):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel, self.demodulate = in_ch, out_ch, kernel, demodulate
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel) / (in_ch * kernel * kernel) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.style = nn.Linear(code_dim, in_ch)
        nn.init.zeros_(self.style.weight)
        nn.init.ones_(self.style.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        style = self.style(z).view(batch, 1, self.in_ch, 1, 1)
        weight = self.weight.unsqueeze(0) * style
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        weight = weight.reshape(batch * self.out_ch, self.in_ch, self.kernel, self.kernel)
        out = F.conv2d(x.reshape(1, batch * self.in_ch, height, width), weight, padding=self.kernel // 2, groups=batch)
        return out.view(batch, self.out_ch, height, width) + self.bias.view(1, -1, 1, 1)


def mean_std_pool(x: torch.Tensor) -> torch.Tensor:
    """Global mean and standard deviation per channel: statistics, not layout, so codes ignore content placement."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(dim=2), flat.std(dim=2, unbiased=False)], dim=1)


def double_conv(a: int, b: int) -> nn.Sequential:
    """A U-Net level: two 3x3 convolutions, each followed by LeakyReLU(0.1)."""
    return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(b, b, 3, 1, 1), nn.LeakyReLU(0.1))


def unet_levels(features: int, depth: int, channels: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The ``down`` and ``up`` levels of a U-Net on ``channels`` input channels: ``depth`` scales, each with twice
    the features of the one above."""
    widths = [features * 2 ** i for i in range(depth)]
    down = nn.ModuleList(double_conv(a, b) for a, b in zip([channels, *widths], widths))
    up = nn.ModuleList(double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1)))
    return down, up


def unet_pass(x: torch.Tensor, down: nn.ModuleList, up: nn.ModuleList, pool, upsample) -> torch.Tensor:
    """The top level's features of a U-Net (``unet_levels``) for ``x``, any H and W (padded inside, replicating
    the edge, to a multiple of the coarsest scale; the caller crops its output back to ``x``'s size)."""
    h, w = x.shape[-2:]
    step = 2 ** (len(down) - 1)
    x = F.pad(x, (0, -w % step, 0, -h % step), mode="replicate")
    skips = []
    for i, block in enumerate(down):
        x = block(x if i == 0 else pool(x))
        skips.append(x)
    for block, skip in zip(up, reversed(skips[:-1])):
        x = block(torch.cat([upsample(x), skip], 1))
    return x
