"""CondSR made fast for inference, and frames run through it in batches that survive out-of-memory.

:class:`FastCondSR` computes exactly what ``CondSR.forward`` computes (fp32 on CPU: within 1e-5 of
it; bf16/fp16 on CUDA: within 3e-2), rearranged for speed:

* a code is the same for a whole batch (one code per shot), so each block's FiLM is folded into the
  weights and bias of the convolution before it: ``(W*x + b)(1 + g) + beta = (W(1 + g))*x + b(1 + g)
  + beta``; a block is then conv -> LeakyReLU -> conv, all in place where possible;
* convolutions run channels-last (oneDNN's layout; ``bench speed`` prints this forward against the
  eager one);
* the bicubic skip is a fixed polyphase convolution (5x5 taps per output phase, replicate padding:
  what ``F.interpolate(mode="bicubic")`` computes) added to the upsampler's output *before* the
  pixel shuffle, and the shuffle itself is one reshape straight into NHWC, the layout the encoder
  reads: no full-resolution NCHW tensor, no separate add, no extra copy;
* on CUDA, the trunk runs under the device's autocast (``device.autocast_dtype``: bf16 on sm80+,
  fp16 before; the FiLM fold and the bicubic skip stay fp32), frames go up and come back through
  reused pinned host buffers with non-blocking copies.

:class:`FrameRestorer` runs lists of HxWx3 frames through it (or through the whole stack,
``pipeline.stack.StackNet``): whole frames batched when they fit the device's memory, overlapping
tiles otherwise (``plan``); on out-of-memory a tiled frame halves its tile, whole frames halve the
batch, and each fallback is said once.
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..compute.device import autocast_dtype, is_out_of_memory
from ..errors import DeviceError
from ..nets.condsr import CondSR
from .tiles import run_tiled

CL = torch.channels_last
CPU_TOLERANCE = 1e-5   # max |fast - eager| on CPU, fp32, images in [0, 1]
CUDA_TOLERANCE = 3e-2  # the same under bf16 / fp16 autocast
CPU_BUDGET = 768 << 20  # bytes of activations one CPU forward pass may take (see ``memory_budget``)
# Frames batched on the CPU only up to this many bytes of activations a pass: beyond, a batch is slower
# per frame than one frame at a time (measured here, 480x352 through the SRVGG stack: batch 2 took
# 2.74 s a frame, batch 1 2.13 s).
CPU_BATCH_BYTES = 128 << 20


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; nothing for None (fp32)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_phases(scale: int) -> torch.Tensor:
    """(3*scale*scale, 1, 5, 5) weights: output channel ``c*s*s + i*s + j`` is colour ``c``'s
    bicubic sample at sub-pixel phase (i, j) (``align_corners=False``, a = -0.75, as PyTorch), read
    from the 5x5 LQ neighbourhood around each pixel (replicate-padded by 2)."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for phase in range(scale):
        src = (phase + 0.5) / scale - 0.5
        first = math.floor(src)
        for j in range(-1, 3):
            taps[phase, first + j + 2] = _cubic(j - (src - first))
    kernel = torch.einsum("ia,jb->ijab", taps, taps).reshape(scale * scale, 1, 5, 5)
    return kernel.repeat(3, 1, 1, 1).float()


class FastCondSR:
    """CondSR for inference: ``fast(lq, z)`` -> (N, H*s, W*s, 3) float32 at the native scale,
    not clamped, NHWC. ``lq``: (N, 3, H, W) float on the device (any memory format)."""

    def __init__(self, model: CondSR, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        # the trunk's autocast dtype: bf16 on sm80+ GPUs, fp16 on older ones, None (fp32) on the CPU
        self.dtype = autocast_dtype(self.device) if dtype is None else dtype
        self.scale = model.scale
        with torch.no_grad():  # the model itself is left as it is (its layout, its device)
            self.head, self.body_end, self.upsample = (
                (conv.weight.to(self.device, memory_format=CL), conv.bias.to(self.device))
                for conv in (model.head, model.body_end, model.upsample[0]))
        self.phases = bicubic_phases(self.scale).to(self.device, memory_format=CL)
        self._folded: tuple[bytes, list] | None = None

    @property
    def bytes_per_pixel(self) -> int:
        """Memory per LQ pixel of one forward, generously: three trunk-wide maps in flight, the
        upsampler's output and the bicubic base (3*s*s channels each), in fp32."""
        return 4 * (3 * self.head[0].shape[0] + 2 * 3 * self.scale ** 2)

    def _blocks(self, z: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Each block's (conv1 weight and bias with the FiLM of code ``z`` folded in, conv2's), cached
        for the last code seen. Computed in fp32 outside any autocast: gamma and beta are never rounded
        to bf16/fp16 before folding (autocast casts the folded weights for the convolution itself)."""
        key = z.detach().float().cpu().numpy().tobytes()
        if self._folded is None or self._folded[0] != key:
            model_device = next(self.model.parameters()).device
            with torch.autocast(model_device.type, enabled=False):
                self._folded = (key, self._fold(z[None].float().to(model_device)))
        return self._folded[1]

    def _fold(self, z: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        code = self.model.code_mlp(z)
        blocks = []
        for b in self.model.blocks:
            gamma, beta = b.film.proj(code)[0].chunk(2)
            w1 = (b.conv1.weight * (1 + gamma)[:, None, None, None]).to(self.device, memory_format=CL)
            w2 = b.conv2.weight.to(self.device, memory_format=CL)
            blocks.append((w1, (b.conv1.bias * (1 + gamma) + beta).to(self.device), w2, b.conv2.bias.to(self.device)))
        return blocks

    @torch.inference_mode()
    def __call__(self, lq: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        n = lq.shape[0]
        if z is None or not self.model.conditioned:
            z = lq.new_zeros(n, self.model.code_dim)
        z = z.reshape(-1, self.model.code_dim).expand(n, -1) if z.numel() == self.model.code_dim else z
        if n > 1 and not bool((z == z[:1]).all()):  # codes differ within the batch: one by one
            return torch.cat([self(lq[i:i + 1], z[i:i + 1]) for i in range(n)])
        lq = lq.float().contiguous(memory_format=CL)
        blocks = self._blocks(z[0])
        with autocast(self.device, self.dtype):
            up = self._trunk(lq, blocks)
        base = F.conv2d(F.pad(lq, (2, 2, 2, 2), mode="replicate"), self.phases, groups=3)
        up = base.add_(up.float())
        _, c, h, w = up.shape
        s = self.scale
        # channels-last memory is (n, h, w, c) with c = colour*s*s + i*s + j: shuffle straight to NHWC
        return up.permute(0, 2, 3, 1).reshape(n, h, w, 3, s, s).permute(0, 1, 4, 2, 5, 3).reshape(n, h * s, w * s, 3)

    def _trunk(self, lq: torch.Tensor, blocks: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        x = F.conv2d(lq, *self.head, padding=1)
        skip = x
        for w1, b1, w2, b2 in blocks:
            h = F.leaky_relu_(F.conv2d(x, w1, b1, padding=1), 0.2)
            x = F.conv2d(h, w2, b2, padding=1).add_(x)
        x = F.conv2d(x, *self.body_end, padding=1).add_(skip)
        return F.conv2d(x, *self.upsample, padding=1)


@torch.inference_mode()
def restore_nhwc(fast: FastCondSR, lq: torch.Tensor, z: torch.Tensor | None, scale: int) -> torch.Tensor:
    """``fast`` at any output scale (x1/x2: area resampling of the native result, as
    ``restore_at_scale``), clamped to [0, 1], NHWC."""
    out = fast(lq, z)
    if scale != fast.scale:
        size = (lq.shape[-2] * scale, lq.shape[-1] * scale)
        out = F.interpolate(out.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)
    return out.clamp_(0, 1)


class FrameRestorer:
    """HxWx3 frames (float32 in [0, 1] or uint8) -> restored HxWx3 float32 frames through ``net``
    (a ``FastCondSR``, or ``pipeline.stack.StackNet``: anything with ``device``, ``scale``,
    ``bytes_per_pixel`` and ``net(lq NCHW, z) -> NHWC``).

    ``tile=None`` (the default) sizes the work to the device's free memory (``memory_budget``):
    whole frames, ``batch`` at a time or fewer, when they fit; overlapping tiles as large as fit
    otherwise. A number fixes the tile: larger frames run in tiles of that many LQ pixels. On
    out-of-memory the work shrinks (tiled frames: half the tile; whole frames: half the batch, then
    tiles), down to ``min_tile``; each kind of fallback is said once through ``notify`` and kept for
    the frames that follow."""

    def __init__(self, net, scale: int, batch: int = 4, tile: int | None = None, overlap: int = 16,
                 min_tile: int = 64, notify: Callable[[str], None] | None = None, budget: int | None = None):
        self.net, self.scale = net, scale
        self.batch, self.tile, self.overlap, self.min_tile = max(1, batch), tile, overlap, min_tile
        self.budget = budget
        self.notify = notify or (lambda message: print(f"note: {message}", file=sys.stderr))
        self.notices: list[str] = []
        self._said: set[str] = set()
        self._pinned: torch.Tensor | None = None   # the upload staging buffer (CUDA), reused
        self._staging: torch.Tensor | None = None  # the download staging buffer (CUDA), reused

    @property
    def device(self) -> torch.device:
        return self.net.device

    def restore(self, frames: Sequence[np.ndarray], code: np.ndarray | None, as_uint8: bool = False) -> list[np.ndarray]:
        """The frames restored with ``code``: float32 HxWx3 in [0, 1], or with ``as_uint8`` rounded to
        uint8 on the device (what the encoder takes: a quarter of the bytes to bring back, and no
        conversion on the host; the same values ``media.video.to_uint8`` gives)."""
        z = None if code is None else torch.from_numpy(np.asarray(code, np.float32)).to(self.device)
        out: list[np.ndarray] = []
        while len(out) < len(frames):
            batch, tile = self.plan(frames[len(out)].shape[:2])
            group = self._group(frames, len(out), batch)
            failed = False
            try:
                out += self._run(group, z, tile, as_uint8)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = True
            if failed:  # outside the handler: the failed pass's tensors are gone with its traceback
                self._shrink(group[0].shape[:2], len(group), tile)
        return out

    def plan(self, size: tuple[int, int]) -> tuple[int, int]:
        """(frames per pass, LQ tile) for frames of ``size``: a tile of at least the longer side means
        whole frames."""
        side = max(size)
        if self.tile is not None:
            return (self.batch if side <= self.tile else 1), self.tile
        budget = self.budget or memory_budget(self.device)
        per_frame = size[0] * size[1] * self.net.bytes_per_pixel
        if per_frame <= budget:
            if self.device.type == "cpu":  # batches pay on the CPU only while a pass stays cache-sized
                budget = min(budget, CPU_BATCH_BYTES)
            return max(1, min(self.batch, budget // per_frame)), side
        tile = int(math.sqrt(budget / self.net.bytes_per_pixel)) // 16 * 16
        return 1, max(self.min_tile, min(tile, side))

    def _group(self, frames: Sequence[np.ndarray], start: int, batch: int) -> Sequence[np.ndarray]:
        """The next frames of one size, at most ``batch``."""
        group = [frames[start]]
        for frame in frames[start + 1:start + batch]:
            if frame.shape != group[0].shape:
                break
            group.append(frame)
        return group

    def _run(self, group: Sequence[np.ndarray], z: torch.Tensor | None, tile: int, as_uint8: bool) -> list[np.ndarray]:
        height, width = group[0].shape[:2]
        lq = self.upload(group)
        finish = _to_uint8 if as_uint8 else (lambda t: t)
        if max(height, width) <= tile:
            return self.download(finish(self._restore(lq, z)))

        return [self.download(run_tiled(lambda part: self._restore(part, z), lq[i:i + 1], self.scale, tile,
                                        self.overlap, nhwc=True, finish=finish))[0]
                for i in range(len(group))]

    def _restore(self, lq: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """NCHW LQ -> NHWC at the output scale, clamped."""
        return restore_nhwc(self.net, lq, z, self.scale)

    def upload(self, group: Sequence[np.ndarray]) -> torch.Tensor:
        """Frames -> (N, 3, H, W) float on the device, channels-last in memory (no copy on CPU
        beyond the stacking; on CUDA one reused pinned buffer and a non-blocking copy; uint8 frames
        travel as uint8, a quarter of the bytes, and become float on the device)."""
        host = torch.from_numpy(np.stack(group))
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.shape != host.shape or self._pinned.dtype != host.dtype:
                self._pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            else:  # the previous upload must have left before its buffer is refilled
                torch.cuda.current_stream(self.device).synchronize()
            host = self._pinned.copy_(host)
        lq = host.to(self.device, non_blocking=True)
        lq = lq.float().div_(255.0) if lq.dtype == torch.uint8 else lq.float()
        return lq.permute(0, 3, 1, 2)

    def download(self, out: torch.Tensor) -> list[np.ndarray]:
        """NHWC on the device (float32 or uint8) -> ordinary (not page-locked) arrays: on CUDA through one
        reused pinned staging buffer, copied out before the next batch can refill it."""
        if out.device.type != "cuda":
            return [np.ascontiguousarray(o) for o in out.numpy()]
        if self._staging is None or self._staging.shape != out.shape or self._staging.dtype != out.dtype:
            self._staging = None  # the old block goes before the new one is pinned
            self._staging = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        self._staging.copy_(out, non_blocking=True)
        torch.cuda.current_stream(out.device).synchronize()
        return list(self._staging.numpy().copy())

    def _shrink(self, size: tuple[int, int], frames: int, tile: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        side = max(size)
        if frames > 1:  # whole frames, several at a time: fewer at a time
            self.batch, self.tile = max(1, frames // 2), max(tile, side)
            self._say("batch", f"out of memory on {self.device}: retrying with smaller batches "
                               f"(now {self.batch} frames per pass)")
            return
        tile = min(tile, side)
        if tile // 2 < self.min_tile:
            raise DeviceError(f"out of memory on {self.device} even one frame at a time in {tile}-pixel tiles; "
                              "use --device cpu or a smaller --tile")
        self.tile = tile // 2
        self._say("tile", f"out of memory on {self.device}: retrying with smaller tiles (now {self.tile} pixels)")

    def _say(self, kind: str, message: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            self.notices.append(message)
            self.notify(message)


@torch.inference_mode()
def _to_uint8(out: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 as ``media.video.to_uint8`` rounds them (x * 255 + 0.5, truncated);
    ``out`` is overwritten."""
    return out.clamp_(0, 1).mul_(255.0).add_(0.5).to(torch.uint8)  # in place: ``out`` is the pass's own


def memory_budget(device: torch.device) -> int:
    """Bytes one forward pass may take: on CUDA half the free GPU memory; on the CPU a quarter of the
    available memory, at most ``CPU_BUDGET`` (larger batches stop paying before that, and a video job
    keeps frames in its decode and encode queues besides)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return min(CPU_BUDGET, available_memory() // 4)


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (Linux); elsewhere ``CPU_BUDGET`` x 4."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return CPU_BUDGET * 4
