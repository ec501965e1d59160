"""ReDegNet's specific restorer (``--adapt``): the cleanup fine-tuned to one degradation code.

The paper uses the degradation it reads from a face in two ways: a general restorer conditioned on
it (our stack: the code steers the cleanup), and a restorer fine-tuned on pairs that DegSynth makes
from HQ pictures with that one degradation. This is the second, for our cleanup: starting from the
shipped weights, ``Adaptation.steps`` steps of Adam on pairs (DegSynth(HQ crop, code) area-reduced x4
-> the HQ crop area-reduced x4: what the cleanup learns in its own training, ``train.cleanup_stage``,
with this code alone). The crops, the synthesis noise and the order are seeded from the code, so a
code gives the same pairs on every run.

An adaptation is kept in the job's folder (``adapted/KEY.safetensors``), KEY a hash of the code, the
cleanup's and DegSynth's files, the HQ pictures and the settings: a resumed or repeated job reuses it,
and a corrupt file is made again, with a message. The first process to finish one keeps it (an
exclusive link): every item of the job, on any worker, then restores with those exact weights.

HQ pictures: ``--adapt-data DIR`` (the user's own, e.g. the good scans of the same collection), else
scikit-image's sample photos (installed with it; public domain or CC0, see its ``data/README.txt``).
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import UsageError
from ..media.folders import image_files, load_rgb
from ..nets.checkpoint import load_checkpoint, save_checkpoint
from ..weights.downloads import sha256_file
from ..weights.folders import find_model

FACTOR = 4           # DegSynth makes the LQ at HQ size; the cleanup works at the LQ's, a quarter of it
MAX_GRAD_NORM = 1.0  # as the cleanup's own training
KEPT = "adapted"     # the job folder's subfolder of kept adaptations
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
                 "camera.png", "brick.png", "grass.png", "gravel.png")  # scikit-image's, shipped in its wheel


@dataclass(frozen=True)
class Adaptation:
    """How a code's cleanup is fine-tuned (chosen by measurement: models/MODELS.md, ``bench quality --adapt``)."""

    steps: int = 60
    lr: float = 1e-4
    batch: int = 8
    crop: int = 96   # HQ crop; the cleanup sees a quarter of it


class HQBank:
    """The HQ pictures the pairs are made from, and a digest of them (part of the adaptation's key)."""

    def __init__(self, images: list[np.ndarray], digest: str, source: str) -> None:
        self.images, self.digest, self.source = images, digest, source

    @classmethod
    def from_folder(cls, folder: Path, min_side: int, files: tuple[str, ...] | None = None) -> HQBank:
        paths = [folder / name for name in files] if files else image_files(folder)
        digest = hashlib.sha256()
        images = []
        for path in sorted(paths):
            if path.is_file():
                digest.update(path.name.encode() + path.read_bytes())
                image = load_rgb(path, max_side=512)
                if min(image.shape[:2]) >= min_side:
                    images.append(image)
        if not images:
            raise UsageError(f"--adapt found no picture of at least {min_side} px in {folder}: give --adapt-data a "
                             "folder of good (sharp, clean) photos")
        return cls(images, digest.hexdigest()[:16], str(folder))

    @classmethod
    def of(cls, folder: Path | None, min_side: int) -> HQBank:
        """``folder``, else scikit-image's sample photos."""
        if folder is not None:
            return cls.from_folder(folder, min_side)
        try:
            from skimage import data
        except ImportError:
            raise UsageError("--adapt needs good photos to learn from: pip install scikit-image (its sample photos), "
                             "or give --adapt-data DIR") from None
        return cls.from_folder(Path(data.__file__).parent, min_side, SAMPLE_PHOTOS)

    def crops(self, rng: np.random.Generator, count: int, size: int) -> torch.Tensor:
        """``count`` random ``size`` x ``size`` crops (flipped at random) as NCHW float in [0, 1]."""
        out = []
        for _ in range(count):
            image = self.images[rng.integers(len(self.images))]
            y, x = rng.integers(image.shape[0] - size + 1), rng.integers(image.shape[1] - size + 1)
            crop = image[y : y + size, x : x + size]
            out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        batch = np.stack(out).astype(np.float32) / 255.0
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def code_seed(code: np.ndarray) -> int:
    return int.from_bytes(hashlib.sha256(np.asarray(code, np.float32).tobytes()).digest()[:8], "little")


def fine_tune(cleanup: nn.Module, synth: nn.Module, code: np.ndarray, bank: HQBank, settings: Adaptation,
              tick: Callable[[], None] = lambda: None) -> nn.Module:
    """A copy of ``cleanup`` fine-tuned on DegSynth pairs made with ``code`` (the module's docstring)."""
    device = next(cleanup.parameters()).device
    model = copy.deepcopy(cleanup).float().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    seed = code_seed(code)
    rng, noise = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    z = torch.as_tensor(np.asarray(code, np.float32), device=device).reshape(1, -1).expand(settings.batch, -1)
    small = settings.crop // FACTOR
    for _ in range(settings.steps):
        hq = bank.crops(rng, settings.batch, settings.crop).to(device)
        with torch.no_grad():
            grain = torch.randn(settings.batch, 1, small, small, generator=noise).to(device)
            lq = F.interpolate(synth(hq, z, noise=grain), scale_factor=1 / FACTOR, mode="area").clamp(0, 1)
            clean = F.interpolate(hq, scale_factor=1 / FACTOR, mode="area")
        loss = F.l1_loss(model(lq, z), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        tick()
    return model.eval()


@dataclass
class Adapter:
    """The job's adapted cleanups: one per code, kept in ``folder`` and reused."""

    cleanup: nn.Module
    synth: nn.Module
    bank: HQBank
    folder: Path
    weights: str            # the cleanup's and DegSynth's files, by content
    settings: Adaptation = Adaptation()
    notify: Callable[[str], None] = print
    seconds: float = 0.0    # spent fine-tuning in this process

    def key(self, code: np.ndarray) -> str:
        what = hashlib.sha256(np.asarray(code, np.float32).tobytes())
        what.update(f"{self.weights} {self.bank.digest} {sorted(asdict(self.settings).items())}".encode())
        return what.hexdigest()[:20]

    def path(self, code: np.ndarray) -> Path:
        return self.folder / KEPT / f"{self.key(code)}.safetensors"

    def adapted(self, code: np.ndarray, progress: bool = True) -> tuple[nn.Module, dict]:
        """``cleanup_for(code)`` with a progress bar while it is made; and what an item records of it."""
        with tqdm(total=self.settings.steps, desc="adapting the cleanup to a code", unit="step", leave=False,
                  disable=not progress or self.path(code).is_file()) as bar:
            cleanup = self.cleanup_for(code, lambda: bar.update(1))
        return cleanup, {"adapted": self.key(code)}

    def cleanup_for(self, code: np.ndarray, tick: Callable[[], None] = lambda: None) -> nn.Module:
        """The cleanup fine-tuned to ``code``: the kept one, else made now and kept."""
        path = self.path(code)
        device = next(self.cleanup.parameters()).device
        if path.is_file():
            try:
                return load_checkpoint(path, device, expect="Cleanup").model.eval()
            except Exception as exc:  # truncated, overwritten, not ours: whatever it is, it is made again
                self.notify(f"the kept adaptation {path.name} cannot be read ({exc}); adapting again")
                path.unlink(missing_ok=True)
        started = time.monotonic()
        model = fine_tune(self.cleanup, self.synth, code, self.bank, self.settings, tick)
        self.seconds += time.monotonic() - started
        keep_first(model, path)
        return load_checkpoint(path, device, expect="Cleanup").model.eval()  # the kept bytes, whoever kept them


def job_adapter(engine, options, job_dir: Path, notify: Callable[[str], None]) -> Adapter:
    """The adapter of a job (its ``engine``'s cleanup, the shipped DegSynth, the HQ pictures of ``options``)."""
    if engine.cleanup is None:
        raise UsageError("--adapt fine-tunes the cleanup, which --upscaler condsr does not use: choose an upscaler, "
                         "or leave --adapt out")
    dirs = list(options.models_dirs)
    cleanup_file, synth_file = find_model("cleanup_compact", dirs), find_model("deg_synth", dirs)
    synth = load_checkpoint(synth_file, engine.device, expect="DegSynth").model.eval()
    weights = f"{sha256_file(cleanup_file)[:16]} {sha256_file(synth_file)[:16]}"
    settings = Adaptation()
    bank = HQBank.of(Path(options.adapt_data) if options.adapt_data else None, settings.crop)
    return Adapter(engine.cleanup, synth, bank, job_dir, weights, settings, notify=notify)


def keep_first(model: nn.Module, path: Path) -> None:
    """Save ``model`` at ``path`` unless another process did first (an exclusive link, not a rename)."""
    mine = save_checkpoint(model, path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors"))
    try:
        os.link(mine, path)
    except FileExistsError:
        pass  # another worker's adaptation of the same code is kept: the job uses one
    finally:
        mine.unlink(missing_ok=True)
