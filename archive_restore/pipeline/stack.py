"""The restoration stack (DESIGN.md §2b): the code steers a cleanup, a strong upscaler adds the detail.

    LQ --Cleanup(LQ, z) [ours, x1]--> clean LQ --upscaler [Real-ESRGAN, SRVGG, SwinIR... any file
       spandrel loads]--> x4 --(1 - fidelity) + fidelity x CondSR(LQ, z)--> the restored picture

The cleanup removes what the degradation code describes (noise, grain, halftone, blocks, blur, fading,
cast) and leaves the rest; the upscaler never sees the damage it would otherwise sharpen into
texture. ``fidelity`` blends towards the faithful CondSR result (0: the upscaler's picture alone).
Without an upscaler file the stack is CondSR alone, as before the stack existed.

Below the upscaler's own scale (``--scale 1`` or ``2`` with a x4 upscaler) the clean LQ reaches the output size
by one of ``SCALE_METHODS`` (``upscale_to``): ``full`` runs the upscaler on the whole picture and shrinks its
answer (what a x4 job costs, for a quarter or a sixteenth of the pixels); ``reduced`` shrinks the clean LQ first,
so that the upscaler's x4 lands on the output size (a quarter of the work at x2, a sixteenth at x1); ``cleanup``
leaves the upscaler out (the clean LQ resized; the CondSR blend as always). The default
(``default_scale_method``), from ``bench quality --scale 1|2`` with x4plus and our compact upscaler (figures in
models/MODELS.md): at x1 ``cleanup``, the best PSNR-Y there (x4plus: 29.30 dB against 26.88 for ``full``) and
60 x less time; at x2 ``full``: ``cleanup`` is as close in PSNR-Y (25.26 against 25.28 dB) but visibly softer
(NIQE 12.5 against 7.6), ``reduced`` 0.48 dB lower.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..compute.cpu import cpu_half_dtype
from ..compute.device import autocast_dtype
from .forward import FastCondSR, FrameRestorer, autocast, restore_nhwc
from .tiles import run_tiled

#: The default blend towards CondSR (``--fidelity``): see models/MODELS.md for how it was chosen.
DEFAULT_FIDELITY = 0.1
OVERLAP = 16          # tile overlap in LQ pixels for the upscaler
CLEANUP_OVERLAP = 32  # the cleanup sees further (its trunk runs at half resolution)
SCALE_METHODS = ("full", "reduced", "cleanup")  # how a scale below the upscaler's own is reached
DEFAULT_SCALE_METHOD = "full"  # what a job recorded before the choice existed ran
SCALE_METHOD_DEFAULTS = {1: "cleanup"}  # measured (see the module); other scales: DEFAULT_SCALE_METHOD


def default_scale_method(scale: int) -> str:
    """The method a job at ``scale`` takes when ``--scale-method`` is not given."""
    return SCALE_METHOD_DEFAULTS.get(scale, DEFAULT_SCALE_METHOD)

Net = Callable[[torch.Tensor], torch.Tensor]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, H, W) at ``size``: area when shrinking, bicubic when enlarging."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if size[0] < x.shape[-2] else "bicubic"
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def upscale_to(cleaned: torch.Tensor, upscaler: Net, upscaler_scale: int, size: tuple[int, int],
               method: str = DEFAULT_SCALE_METHOD) -> torch.Tensor:
    """The clean LQ (N, 3, H, W) at ``size`` through ``upscaler`` (x ``upscaler_scale``), float, not clamped.
    Below the upscaler's scale, ``method`` (one of ``SCALE_METHODS``, see the module) says how."""
    if method not in SCALE_METHODS:
        raise ValueError(f"unknown scale method {method!r}; one of {', '.join(SCALE_METHODS)}")
    below = size[0] < cleaned.shape[-2] * upscaler_scale
    if below and method == "cleanup":
        return resize_to(cleaned.float(), size)
    if below and method == "reduced":
        smaller = (max(1, -(-size[0] // upscaler_scale)), max(1, -(-size[1] // upscaler_scale)))  # rounded up
        cleaned = resize_to(cleaned, smaller)
    return resize_to(upscaler(cleaned).float(), size)


@torch.inference_mode()
def stack_restore(lq: torch.Tensor, z: torch.Tensor, cleanup: torch.nn.Module, upscaler: Net,
                  condsr: torch.nn.Module | None = None, fidelity: float = DEFAULT_FIDELITY,
                  scale: int = 4, method: str = DEFAULT_SCALE_METHOD, upscaler_scale: int = 4) -> torch.Tensor:
    """The stack on a batch of whole images (no tiles): (N, 3, H, W) in [0, 1] and a code (1 or N, D)
    -> (N, 3, H*scale, W*scale) in [0, 1]. ``condsr`` is needed only when ``fidelity`` > 0; ``method``, below
    the upscaler's scale (``upscale_to``)."""
    z = z.expand(lq.shape[0], -1) if z.shape[0] == 1 else z
    cleaned = cleanup(lq, z).clamp(0, 1)
    size = (lq.shape[-2] * scale, lq.shape[-1] * scale)
    out = upscale_to(cleaned, upscaler, upscaler_scale, size, method).clamp(0, 1)
    if fidelity > 0:
        faithful = resize_to(condsr(lq, z).float(), size).clamp(0, 1)
        out = out.mul_(1 - fidelity).add_(faithful, alpha=fidelity)
    return out


@torch.inference_mode()
def upscale_alone(upscaler: Net, upscaler_scale: int, rgb: np.ndarray, scale: int = 4, tile: int = 256) -> np.ndarray:
    """An HxWx3 float picture enlarged by the upscaler alone (no cleanup, no blend), in overlapping
    tiles, at x``scale``, clamped: the baseline the stack is measured against."""
    lq = torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(2, 0, 1)[None]
    out = run_tiled(lambda t: upscaler(t).float(), lq, upscaler_scale, tile, OVERLAP)
    out = resize_to(out, (rgb.shape[0] * scale, rgb.shape[1] * scale)).clamp(0, 1)
    return out[0].permute(1, 2, 0).numpy()


def faithful_dtype(device: torch.device) -> torch.dtype | None:
    """What the stack's faithful branch (CondSR, blended in at ``fidelity``) computes in on ``device``:
    the device's autocast dtype on a GPU; on a CPU, half precision where the CPU convolves it fast
    (``compute.cpu.cpu_half_dtype``; AMX), else fp32 (None). Only ``fidelity`` (0.1) of its difference
    from fp32 reaches the picture: at most 4.2e-5 with fp16 and 2.8e-4 with bf16, against the fp32
    stack on five real photos at 480x352 (models/MODELS.md), while its convolutions run 4-6 times
    faster. The cleanup is not: its output feeds the upscaler, which carries fp16's error into the
    picture whole (1.4e-3 to 5.0e-3 on the same photos)."""
    return autocast_dtype(device) if device.type == "cuda" else cpu_half_dtype()


def activation_bytes_per_pixel(module: torch.nn.Module, run: Callable[[torch.Tensor], object],
                               channels: int = 3, probe: int = 32) -> int:
    """Memory per input pixel of one forward of ``module``, estimated generously: three times its
    largest layer output (what is alive at once: a layer's input, its output, a skip), in fp32.
    Measured with forward hooks on a ``probe`` x ``probe`` input through ``run``."""
    largest = 0

    def hook(_module, _inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    device = next(module.parameters()).device
    dtype = next(module.parameters()).dtype
    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.inference_mode():
            run(torch.zeros(1, channels, probe, probe, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return 3 * 4 * -(-largest // (probe * probe))


class StackNet:
    """The stack as one pass over a batch or a tile, fused on its device: ``net(lq NCHW, z)`` ->
    NHWC at the output scale, clamped. The cleanup runs under the device's autocast (bf16/fp16 on a
    GPU, fp32 on the CPU), the upscaler in its own dtype (fp16 on a GPU, as Real-ESRGAN runs it; see
    ``Engine``), the CondSR blend through ``FastCondSR`` (in ``faithful_dtype``, as ``Engine`` makes it)."""

    def __init__(self, cleanup: torch.nn.Module, upscaler: Net, upscaler_scale: int, faithful: FastCondSR | None,
                 fidelity: float, scale: int, device: torch.device, method: str = DEFAULT_SCALE_METHOD):
        self.method = method  # below the upscaler's scale: ``upscale_to``
        self.use_cleanup(cleanup)
        self.upscaler, self.upscaler_scale = upscaler, upscaler_scale
        self.faithful, self.fidelity, self.scale, self.device = faithful, fidelity, scale, torch.device(device)
        self.dtype = autocast_dtype(self.device)
        self._bytes: int | None = None

    def use_cleanup(self, cleanup: torch.nn.Module) -> None:
        """Restore with ``cleanup`` from now on (``--adapt``: the one fine-tuned to the code at hand): its own
        copy with channels-last weights (oneDNN's layout; the caller's stays as it is), made once per module."""
        if getattr(self, "_cleanup_of", None) is not cleanup:
            self.cleanup = copy.deepcopy(cleanup).eval().to(memory_format=torch.channels_last)
            self._cleanup_of = cleanup

    @property
    def bytes_per_pixel(self) -> int:
        """Memory per LQ pixel of one pass: the larger of the cleanup's and the upscaler's activations,
        CondSR's, and the output twice (the upscaled picture and the blend), at the output scale."""
        if self._bytes is None:
            code_dim = self.cleanup.code_dim
            cleanup = activation_bytes_per_pixel(self.cleanup, lambda x: self.cleanup(x, x.new_zeros(1, code_dim)))
            model = self.upscaler if isinstance(self.upscaler, torch.nn.Module) else getattr(self.upscaler, "model", None)
            # through the torch model itself, whatever runtime runs it (hooks see only torch's forward)
            upscaler = (activation_bytes_per_pixel(model, model) if isinstance(model, torch.nn.Module)
                        else 3 * 4 * 64 * self.upscaler_scale ** 2)  # an opaque upscaler: an RRDB's upsampler
            faithful = self.faithful.bytes_per_pixel if self.faithful is not None and self.fidelity > 0 else 0
            self._bytes = max(cleanup, upscaler) + faithful + 2 * 4 * 3 * self.scale ** 2
        return self._bytes

    @torch.inference_mode()
    def __call__(self, lq: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        n = lq.shape[0]
        code = z.reshape(-1, self.cleanup.code_dim).float()
        code = code.expand(n, -1) if code.shape[0] == 1 else code
        lq = lq.float().contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            cleaned = self.cleanup(lq, code).float().clamp_(0, 1)
        size = (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale)
        out = upscale_to(cleaned, self.upscaler, self.upscaler_scale, size, self.method).clamp_(0, 1).permute(0, 2, 3, 1)
        if self.fidelity > 0:  # blended in place: one full-size tensor besides the upscaled one
            faithful = restore_nhwc(self.faithful, lq, code, self.scale).float()  # fp32 whatever autocast gave
            out = faithful.mul_(self.fidelity).add_(out, alpha=1 - self.fidelity).clamp_(0, 1)
        return out


class StackRestorer(FrameRestorer):
    """HxWx3 frames -> restored frames through the stack (``StackNet``), on one device, with the
    batching, tiling and out-of-memory fallback of ``FrameRestorer``: whole frames batched when they
    fit the device's memory, overlapping tiles (``CLEANUP_OVERLAP``, for the cleanup's half-resolution
    trunk) otherwise."""

    def __init__(self, cleanup: torch.nn.Module, upscaler: Net, upscaler_scale: int, faithful: FastCondSR | None,
                 fidelity: float, scale: int, device: torch.device, batch: int = 1, tile: int | None = None,
                 method: str = DEFAULT_SCALE_METHOD, **kwargs):
        net = StackNet(cleanup, upscaler, upscaler_scale, faithful, fidelity, scale, device, method)
        super().__init__(net, scale, batch, tile, overlap=CLEANUP_OVERLAP, **kwargs)
