"""Real-ESRGAN's two published network layouts, built straight from their official weight files.

Most upscaler files users have are Real-ESRGAN's: RRDBNet (``RealESRGAN_x4plus``, ``..._anime_6B``) and
SRVGGNetCompact (``realesr-general-x4v3``, ``realesr-animevideov3``). Loading them here, instead of through
spandrel, keeps spandrel (and the torchvision it imports: about 165 MB of a job's memory) out of the
process; any other file still goes through spandrel (``upscalers.load_upscaler``). The layouts follow the
Real-ESRGAN and ESRGAN papers and the official files' keys; the outputs equal spandrel's for the same
weights (``tests/test_upscalers.py``).

RRDBNet (x4): conv_first -> 23 (or 6) residual-in-residual dense blocks -> conv_body, added to the first
features -> twice (nearest x2 -> conv -> LeakyReLU 0.2) -> conv_hr -> LeakyReLU -> conv_last. A dense
block's five convolutions each see the block input and every earlier output; its result is scaled by
0.2 and added to its input, as is each group of three blocks'.

SRVGGNetCompact (x s): conv -> PReLU, then ``num_conv`` times conv -> PReLU, then a conv to 3 s^2 channels,
a pixel shuffle, and the input enlarged by nearest neighbour added.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

RRDB_NAME, COMPACT_NAME = "ESRGAN", "RealESRGAN Compact"  # as spandrel names them (jobs record the name)
RRDB_MINIMUM = 2  # smallest input side spandrel states for RRDBNet; kept so that padding is the same


class DenseBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(features + (i - 1) * growth, growth, 3, 1, 1))
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class ResidualInResidual(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(features, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    scale = 4

    def __init__(self, blocks: int = 23, features: int = 64, growth: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, features, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualInResidual(features, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    def __init__(self, convs: int = 16, features: int = 64, scale: int = 4):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, features, 3, 1, 1), nn.PReLU(features)]
        for _ in range(convs):
            layers += [nn.Conv2d(features, features, 3, 1, 1), nn.PReLU(features)]
        layers.append(nn.Conv2d(features, 3 * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def entry_conv(model: nn.Module) -> tuple[nn.Module, Callable[[nn.Module, nn.Module], None]] | None:
    """The network's first convolution (the one that reads the picture) and how to put another module in
    its place in a copy of the network, for the two layouts built here; None for any other network."""
    if isinstance(model, RRDBNet):
        return model.conv_first, lambda net, module: setattr(net, "conv_first", module)
    if isinstance(model, SRVGGNetCompact):
        return model.body[0], lambda net, module: net.body.__setitem__(0, module)
    return None


def read_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a ``.pth``/``.ckpt`` (through torch's weights-only unpickler) or ``.safetensors``
    file, unwrapped from the official files' ``params_ema``/``params``; None when the file holds anything
    else (spandrel is then asked)."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(os.fspath(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain tensor file: spandrel's loader says what it is
        return None
    return unwrap(state)


def unwrap(state) -> dict[str, torch.Tensor] | None:
    """The state dict inside an official Real-ESRGAN file (``params_ema`` first, then ``params``)."""
    if isinstance(state, dict):
        for key in ("params_ema", "params"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return state


def build(state: dict[str, torch.Tensor]) -> tuple[nn.Module, str, int] | None:
    """(network with these weights, its name, its smallest input side) when ``state`` is exactly one of
    the two layouts, else None."""
    model, name, minimum = _layout(state)
    if model is None:
        return None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:  # a key or shape the layout does not have: not ours to load
        return None
    return model.eval().requires_grad_(False), name, minimum


def _layout(state: dict[str, torch.Tensor]) -> tuple[nn.Module | None, str, int]:
    first = state.get("conv_first.weight")
    if first is not None and first.shape[1] == 3 and "conv_up2.weight" in state:  # RRDBNet at x4
        blocks = len({key.split(".")[1] for key in state if key.startswith("body.")})
        growth = state["body.0.rdb1.conv1.weight"].shape[0] if "body.0.rdb1.conv1.weight" in state else 0
        return RRDBNet(blocks, first.shape[0], growth), RRDB_NAME, RRDB_MINIMUM
    if state and all(key.startswith("body.") for key in state) and state.get("body.1.weight") is not None \
            and state["body.1.weight"].dim() == 1:  # SRVGGNetCompact with PReLU
        last = max(int(key.split(".")[1]) for key in state)
        out = state[f"body.{last}.weight"].shape[0]
        scale = math.isqrt(out // 3)
        if last % 2 or scale * scale * 3 != out:
            return None, "", 0
        return SRVGGNetCompact((last - 2) // 2, state["body.0.weight"].shape[0], scale), COMPACT_NAME, 0
    return None, "", 0
