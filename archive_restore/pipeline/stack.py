"""The restoration stack (DESIGN.md §2b): the code steers a cleanup, a strong upscaler adds the detail.

    LQ --Cleanup(LQ, z) [ours, x1]--> clean LQ --upscaler [Real-ESRGAN, SRVGG, SwinIR... any file
       spandrel loads]--> x4 --(1 - fidelity) + fidelity x CondSR(LQ, z)--> the restored picture

The cleanup removes what the degradation code describes (noise, grain, halftone, blocks, blur, fading,
cast) and leaves the rest; the upscaler never sees the damage it would otherwise sharpen into
texture. ``fidelity`` blends towards the faithful CondSR result (0: the upscaler's picture alone).
Without an upscaler file the stack is CondSR alone, as before the stack existed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .forward import FrameRestorer
from .tiles import run_tiled

#: The default blend towards CondSR (``--fidelity``): see models/MODELS.md for how it was chosen.
DEFAULT_FIDELITY = 0.1
OVERLAP = 16          # tile overlap in LQ pixels for the upscaler
CLEANUP_OVERLAP = 32  # the cleanup sees further (its trunk runs at half resolution)

Net = Callable[[torch.Tensor], torch.Tensor]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, H, W) at ``size``: area when shrinking, bicubic when enlarging."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if size[0] < x.shape[-2] else "bicubic"
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


@torch.inference_mode()
def stack_restore(lq: torch.Tensor, z: torch.Tensor, cleanup: torch.nn.Module, upscaler: Net,
                  condsr: torch.nn.Module | None = None, fidelity: float = DEFAULT_FIDELITY,
                  scale: int = 4) -> torch.Tensor:
    """The stack on a batch of whole images (no tiles): (N, 3, H, W) in [0, 1] and a code (1 or N, D)
    -> (N, 3, H*scale, W*scale) in [0, 1]. ``condsr`` is needed only when ``fidelity`` > 0."""
    z = z.expand(lq.shape[0], -1) if z.shape[0] == 1 else z
    cleaned = cleanup(lq, z).clamp(0, 1)
    size = (lq.shape[-2] * scale, lq.shape[-1] * scale)
    out = resize_to(upscaler(cleaned).float(), size).clamp(0, 1)
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


class StackRestorer:
    """HxWx3 frames -> restored frames through the stack, on one device. A frame larger than ``tile``
    runs in overlapping tiles (the cleanup and the upscaler each tiled); smaller frames run
    ``batch`` at a time. The CondSR part of the blend goes through the fast CondSR forward
    (``FrameRestorer``), which batches, tiles and survives out-of-memory on its own."""

    def __init__(self, cleanup: torch.nn.Module, upscaler: Net, upscaler_scale: int, faithful: FrameRestorer,
                 fidelity: float, scale: int, device: torch.device, batch: int = 1, tile: int = 256):
        self.cleanup, self.upscaler, self.upscaler_scale = cleanup.eval(), upscaler, upscaler_scale
        self.faithful, self.fidelity, self.scale = faithful, fidelity, scale
        self.device, self.batch, self.tile = device, max(1, batch), tile

    def restore(self, frames: Sequence[np.ndarray], code: np.ndarray) -> list[np.ndarray]:
        z = torch.from_numpy(np.asarray(code, np.float32)).reshape(1, -1).to(self.device)
        sharp: list[np.ndarray] = []
        start = 0
        while start < len(frames):
            group = [frames[start]]
            while (len(group) < self.batch and start + len(group) < len(frames)
                   and frames[start + len(group)].shape == group[0].shape):
                group.append(frames[start + len(group)])
            sharp += self._sharp(group, z)
            start += len(group)
        if self.fidelity <= 0:
            return sharp
        faithful = self.faithful.restore(frames, code)
        return [np.clip(s * (1 - self.fidelity) + f * self.fidelity, 0, 1, out=s) for s, f in zip(sharp, faithful)]

    @torch.inference_mode()
    def _sharp(self, group: Sequence[np.ndarray], z: torch.Tensor) -> list[np.ndarray]:
        """Cleanup then upscaler (no blend) at the output scale, float32 HxWx3."""
        lq = self._upload(group)
        height, width = lq.shape[-2:]
        size = (height * self.scale, width * self.scale)
        if max(height, width) <= self.tile:
            out = stack_restore(lq, z, self.cleanup, self.upscaler, fidelity=0, scale=self.scale)
            return [np.ascontiguousarray(o) for o in out.permute(0, 2, 3, 1).cpu().numpy()]
        results = []
        for i in range(len(group)):
            cleaned = run_tiled(lambda t: self.cleanup(t, z).clamp(0, 1), lq[i:i + 1], 1, self.tile,
                                CLEANUP_OVERLAP).to(self.device)
            up = run_tiled(lambda t: self.upscaler(t).float(), cleaned, self.upscaler_scale, self.tile, OVERLAP)
            results.append(np.ascontiguousarray(resize_to(up, size).clamp(0, 1)[0].permute(1, 2, 0).numpy()))
        return results

    def _upload(self, group: Sequence[np.ndarray]) -> torch.Tensor:
        host = torch.from_numpy(np.stack(group))
        lq = host.to(self.device)
        lq = lq.float().div_(255.0) if lq.dtype == torch.uint8 else lq.float()
        return lq.permute(0, 3, 1, 2).contiguous()
