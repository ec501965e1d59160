"""CondSR made fast for inference, and frames run through it in batches that survive out-of-memory.

:class:`FastCondSR` computes exactly what ``CondSR.forward`` computes (fp32 on CPU: within 1e-5 of
it; bf16 on CUDA: within 3e-2), rearranged for speed:

* a code is the same for a whole batch (one code per shot), so each block's FiLM is folded into the
  weights and bias of the convolution before it: ``(W*x + b)(1 + g) + beta = (W(1 + g))*x + b(1 + g)
  + beta``; a block is then conv -> LeakyReLU -> conv, all in place where possible;
* convolutions run channels-last (oneDNN's layout; for one 480x352 frame on 2 loaded CPU cores the
  eager net was 1.4-2.1x faster channels-last in a first measurement, about even in later noisy
  ones; NCHW with oneDNN off was ~3x slower than either);
* the bicubic skip is a fixed polyphase convolution (5x5 taps per output phase, replicate padding:
  what ``F.interpolate(mode="bicubic")`` computes) added to the upsampler's output *before* the
  pixel shuffle, and the shuffle itself is one reshape straight into NHWC, the layout the encoder
  reads: no full-resolution NCHW tensor, no separate add, no extra copy;
* on CUDA, the trunk runs under bf16 autocast (the bicubic skip stays fp32), frames go up through
  pinned host memory with non-blocking copies and come back the same way.

:class:`FrameRestorer` runs lists of HxWx3 frames through it: batches of ``batch`` frames when a
frame fits in one tile, overlapping tiles otherwise; on out-of-memory it retries with half the
batch, then half the tile, and says so once for each.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeviceError
from ..nets.condsr import CondSR
from .tiles import run_tiled

CL = torch.channels_last
THREADS_ENV = "ARCHIVE_RESTORE_THREADS"
CPU_TOLERANCE = 1e-5   # max |fast - eager| on CPU, fp32, images in [0, 1]
CUDA_TOLERANCE = 3e-2  # the same under bf16 autocast


def cpu_threads() -> int:
    """Intra-op threads for the network on CPU: all usable cores but one, which is left to the
    decoding and encoding threads that run beside it (at least one; ``$ARCHIVE_RESTORE_THREADS``
    overrides). On this project's 2-core machine: 1 thread for torch, one core for the codecs."""
    if os.environ.get(THREADS_ENV, "").isdigit() and int(os.environ[THREADS_ENV]) > 0:
        return int(os.environ[THREADS_ENV])
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def tune_for(device: torch.device) -> None:
    """Process settings for inference on ``device``: on CPU, torch's thread count (``cpu_threads``)
    and glibc's malloc told to keep freed memory instead of returning it to the system, so that the
    large per-frame tensors do not page-fault again every frame (measured here: system time per
    480x352 frame 1.3-2.0 s -> 0.7 s)."""
    if device.type != "cpu":
        return
    torch.set_num_threads(cpu_threads())
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim the heap only above 1 GiB free
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD: grow the heap 64 MiB at a time
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: heap (reused) up to 32 MiB blocks, glibc's maximum
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


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

    def __init__(self, model: CondSR, device: torch.device | str | None = None, bf16: bool | None = None):
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.bf16 = self.device.type == "cuda" if bf16 is None else bf16
        self.scale = model.scale
        with torch.no_grad():  # the model itself is left as it is (its layout, its device)
            self.head, self.body_end, self.upsample = (
                (conv.weight.to(self.device, memory_format=CL), conv.bias.to(self.device))
                for conv in (model.head, model.body_end, model.upsample[0]))
        self.phases = bicubic_phases(self.scale).to(self.device, memory_format=CL)
        self._folded: tuple[bytes, list] | None = None

    def _blocks(self, z: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Each block's (conv1 weight and bias with the FiLM of code ``z`` folded in, conv2's), cached
        for the last code seen."""
        key = z.detach().float().cpu().numpy().tobytes()
        if self._folded is None or self._folded[0] != key:
            code = self.model.code_mlp(z[None].float().to(next(self.model.parameters()).device))
            blocks = []
            for b in self.model.blocks:
                gamma, beta = b.film.proj(code)[0].chunk(2)
                w1 = (b.conv1.weight * (1 + gamma)[:, None, None, None]).to(self.device, memory_format=CL)
                w2 = b.conv2.weight.to(self.device, memory_format=CL)
                blocks.append((w1, (b.conv1.bias * (1 + gamma) + beta).to(self.device), w2, b.conv2.bias.to(self.device)))
            self._folded = (key, blocks)
        return self._folded[1]

    @torch.inference_mode()
    def __call__(self, lq: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        n = lq.shape[0]
        if z is None or not self.model.conditioned:
            z = lq.new_zeros(n, self.model.code_dim)
        z = z.reshape(-1, self.model.code_dim).expand(n, -1) if z.numel() == self.model.code_dim else z
        if n > 1 and not bool((z == z[:1]).all()):  # codes differ within the batch: one by one
            return torch.cat([self(lq[i:i + 1], z[i:i + 1]) for i in range(n)])
        lq = lq.float().contiguous(memory_format=CL)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16 and self.device.type == "cuda"):
            up = self._trunk(lq, self._blocks(z[0]))
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
    """HxWx3 frames (float32 in [0, 1] or uint8) -> restored HxWx3 float32 frames, ``batch`` at a
    time when a frame fits in a ``tile``, tiled otherwise. On out-of-memory: half the batch, down to
    one frame, then half the tile, down to ``min_tile``; each kind of fallback is reported once
    through ``notify``, and the smaller size is kept for the frames that follow."""

    def __init__(self, fast: FastCondSR, scale: int, batch: int = 4, tile: int = 256, overlap: int = 16,
                 min_tile: int = 64, notify: Callable[[str], None] | None = None):
        self.fast, self.scale = fast, scale
        self.batch, self.tile, self.overlap, self.min_tile = max(1, batch), tile, overlap, min_tile
        self.notify = notify or (lambda message: print(f"note: {message}", file=sys.stderr))
        self.notices: list[str] = []
        self._said: set[str] = set()
        self._pinned: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.fast.device

    def restore(self, frames: Sequence[np.ndarray], code: np.ndarray | None) -> list[np.ndarray]:
        z = None if code is None else torch.from_numpy(np.asarray(code, np.float32)).to(self.device)
        out: list[np.ndarray] = []
        while len(out) < len(frames):
            group = self._group(frames, len(out))
            try:
                out += self._run(group, z)
            except torch.OutOfMemoryError:
                self._shrink(group[0].shape[:2])
        return out

    def _group(self, frames: Sequence[np.ndarray], start: int) -> Sequence[np.ndarray]:
        """The next frames of one size, at most ``batch``."""
        group = [frames[start]]
        for frame in frames[start + 1:start + self.batch]:
            if frame.shape != group[0].shape:
                break
            group.append(frame)
        return group

    def _run(self, group: Sequence[np.ndarray], z: torch.Tensor | None) -> list[np.ndarray]:
        height, width = group[0].shape[:2]
        lq = self.upload(group)
        if max(height, width) <= self.tile:
            return self.download(restore_nhwc(self.fast, lq, z, self.scale))

        def fn(tile: torch.Tensor) -> torch.Tensor:
            return restore_nhwc(self.fast, tile, z, self.scale).permute(0, 3, 1, 2)

        tiled = [run_tiled(fn, lq[i:i + 1], self.scale, self.tile, self.overlap) for i in range(len(group))]
        return [np.ascontiguousarray(t[0].permute(1, 2, 0).numpy()) for t in tiled]

    def upload(self, group: Sequence[np.ndarray]) -> torch.Tensor:
        """Frames -> (N, 3, H, W) float on the device, channels-last in memory (no copy on CPU
        beyond the stacking; pinned memory and a non-blocking copy on CUDA)."""
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
        if out.device.type == "cuda":
            host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(out, non_blocking=True)
            torch.cuda.current_stream(out.device).synchronize()
            out = host
        return list(out.numpy())

    def _shrink(self, size: tuple[int, int]) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch > 1:
            self.batch //= 2
            self._say("batch", f"out of memory on {self.device}: retrying with smaller batches "
                               f"(now {self.batch} frames per pass)")
            return
        tile = min(self.tile, max(size))
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
