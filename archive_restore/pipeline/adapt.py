"""A restorer specific to one degradation (``run --adapt on``): the cleanup fine-tuned on the photo's own faces.

ReDegNet uses the degradation it reads from a face in two ways: a general restorer conditioned on it
(our stack: the code steers the cleanup) and a restorer fine-tuned to that one degradation. The paper
makes the fine-tuning pairs with DegSynth from HQ pictures; ours did not help: fine-tuned on DegSynth
pairs, our cleanup lost 1.7 dB on the real degradation (one Adam step already cost 0.9 dB on one of
them; models/MODELS.md). The face itself is a real pair of that very degradation: the LQ face as it
is in the photo and the face restorer's face, both brought to the face's own size in the photo (where
the cleanup works: it removes noise, blocks, blur and fading, and the restorer's invented detail is
mostly gone at that size). So the cleanup is fine-tuned, from the shipped weights, for
``Adaptation.steps`` steps of Adam on crops of those pairs, with the photo's code; crops and order
are seeded from the code and the pairs, so the same photo gives the same weights on every run.

An adaptation is kept in the job's folder (``adapted/KEY.safetensors``; KEY a hash of the code, the
pairs, the cleanup's file and the settings): a resumed or repeated job reuses it, and a corrupt file is
made again, with a message. The first process to finish one keeps it (an exclusive link): every
process of the job, on any worker, then restores with those exact weights.
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..nets.checkpoint import load_checkpoint, save_checkpoint
from ..weights.downloads import sha256_file
from ..weights.folders import find_model

MAX_GRAD_NORM = 1.0  # as the cleanup's own training
KEPT = "adapted"     # the job folder's subfolder of kept adaptations
NOT_LEARNT = "its faces restored by our face restorer, not learnt from"  # why a photo or shot keeps the cleanup
MIN_FACE = 24        # pixels: a face smaller than this in the photo gives too few crops to learn from


@dataclass(frozen=True)
class Adaptation:
    """How a code's cleanup is fine-tuned; chosen by measurement (models/MODELS.md: 15 to 120 steps, learning
    rates 5e-5 to 3e-4, crops of 32 and 48: the gain peaks at 30 steps and drops with more, the face's
    content taking over)."""

    steps: int = 30
    lr: float = 5e-5
    batch: int = 8
    crop: int = 32  # pixels of the LQ face at its own size


FacePair = tuple[np.ndarray, np.ndarray]  # (LQ face, restored face), HxWx3 float32 in [0, 1], at the face's own size


def face_pair(lq_crop: np.ndarray, restored_crop: np.ndarray, source_pixels: float) -> FacePair | None:
    """An aligned LQ face and its restored face (both at the aligned size) brought to the face's size in the
    photo (area); None when that is under ``MIN_FACE`` pixels."""
    size = int(round(min(source_pixels, lq_crop.shape[0])))
    if size < MIN_FACE:
        return None

    def shrink(crop: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(crop, np.float32), (size, size), interpolation=cv2.INTER_AREA)

    return np.clip(shrink(lq_crop), 0, 1), np.clip(shrink(restored_crop), 0, 1)


def keep_pairs(path: Path, pairs: Sequence[FacePair]) -> None:
    """Write ``pairs`` to ``path`` (an ``.npz``, atomically): a video shot's faces, for its chunks' renders."""
    from ..jobs.runner import atomic_output

    arrays = {f"{kind}{i}": array for i, pair in enumerate(pairs) for kind, array in zip(("lq", "clean"), pair)}
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def kept_pairs(path: Path) -> list[FacePair]:
    """The pairs ``keep_pairs`` wrote."""
    with np.load(path) as data:
        return [(data[f"lq{i}"], data[f"clean{i}"]) for i in range(len(data.files) // 2)]


def pairs_digest(pairs: Sequence[FacePair]) -> str:
    digest = hashlib.sha256()
    for lq, clean in pairs:
        digest.update(np.ascontiguousarray(lq, np.float32).tobytes() + np.ascontiguousarray(clean, np.float32).tobytes())
    return digest.hexdigest()


def fine_tune(cleanup: nn.Module, code: np.ndarray, pairs: Sequence[FacePair], settings: Adaptation,
              tick: Callable[[], None] = lambda: None) -> nn.Module:
    """A copy of ``cleanup`` fine-tuned on crops of ``pairs`` with ``code`` (the module's docstring). On the CPU it
    runs on one thread: sums split over threads add up in another order (weights 3e-8 apart between one and two
    threads, measured), and a Ray worker (one thread) must make the weights the local executor makes."""
    with _one_thread(next(cleanup.parameters()).device):
        return _fine_tune(cleanup, code, pairs, settings, tick)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fine_tune(cleanup: nn.Module, code: np.ndarray, pairs: Sequence[FacePair], settings: Adaptation,
               tick: Callable[[], None]) -> nn.Module:
    device = next(cleanup.parameters()).device
    model = copy.deepcopy(cleanup).float().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    seed = int.from_bytes(hashlib.sha256(np.asarray(code, np.float32).tobytes() + pairs_digest(pairs).encode())
                          .digest()[:8], "little")
    rng = np.random.default_rng(seed)
    lqs = [torch.from_numpy(lq).permute(2, 0, 1) for lq, _ in pairs]
    cleans = [torch.from_numpy(clean).permute(2, 0, 1) for _, clean in pairs]
    z = torch.as_tensor(np.asarray(code, np.float32), device=device).reshape(1, -1).expand(settings.batch, -1)
    for _ in range(settings.steps):
        lq, clean = _crops(rng, lqs, cleans, settings)
        loss = F.l1_loss(model(lq.to(device), z), clean.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        tick()
    return model.eval()


def _crops(rng: np.random.Generator, lqs: list[torch.Tensor], cleans: list[torch.Tensor],
           settings: Adaptation) -> tuple[torch.Tensor, torch.Tensor]:
    """``settings.batch`` random crops (the same place in the LQ and the clean face), flipped at random."""
    a, b = [], []
    for _ in range(settings.batch):
        k = int(rng.integers(len(lqs)))
        size = min(settings.crop, lqs[k].shape[-1])
        y, x = (int(v) for v in rng.integers(0, lqs[k].shape[-1] - size + 1, 2))
        lq, clean = lqs[k][:, y : y + size, x : x + size], cleans[k][:, y : y + size, x : x + size]
        if rng.random() < 0.5:
            lq, clean = lq.flip(-1), clean.flip(-1)
        a.append(F.interpolate(lq[None], size=settings.crop, mode="bilinear") if size < settings.crop else lq[None])
        b.append(F.interpolate(clean[None], size=settings.crop, mode="bilinear") if size < settings.crop else clean[None])
    return torch.cat(a), torch.cat(b)


@dataclass
class Adapter:
    """The job's adapted cleanups: one per (code, face pairs), kept in ``folder`` and reused."""

    cleanup: nn.Module
    folder: Path
    weights: str            # the cleanup's file, by content
    settings: Adaptation = Adaptation()
    notify: Callable[[str], None] = print
    seconds: float = 0.0    # spent fine-tuning in this process

    def key(self, code: np.ndarray, pairs: Sequence[FacePair]) -> str:
        what = hashlib.sha256(np.asarray(code, np.float32).tobytes())
        what.update(f"{pairs_digest(pairs)} {self.weights} {sorted(asdict(self.settings).items())}".encode())
        return what.hexdigest()[:20]

    def path(self, code: np.ndarray, pairs: Sequence[FacePair]) -> Path:
        return self.folder / KEPT / f"{self.key(code, pairs)}.safetensors"

    def adapted(self, code: np.ndarray, pairs: Sequence[FacePair], progress: bool = True) -> tuple[nn.Module, dict]:
        """``cleanup_for`` with a progress bar while it is made; and what an item records of it."""
        with tqdm(total=self.settings.steps, desc="adapting the cleanup to the photo's faces", unit="step",
                  leave=False, disable=not progress or self.path(code, pairs).is_file()) as bar:
            cleanup = self.cleanup_for(code, pairs, lambda: bar.update(1))
        return cleanup, {"adapted": self.key(code, pairs)}

    def cleanup_for(self, code: np.ndarray, pairs: Sequence[FacePair],
                    tick: Callable[[], None] = lambda: None) -> nn.Module:
        """The cleanup fine-tuned to ``code`` on ``pairs``: the kept one, else made now and kept."""
        path = self.path(code, pairs)
        device = next(self.cleanup.parameters()).device
        if path.is_file():
            try:
                return load_checkpoint(path, device, expect="Cleanup").model.eval()
            except Exception as exc:  # truncated, overwritten, not ours: whatever it is, it is made again
                self.notify(f"the kept adaptation {path.name} cannot be read ({exc}); adapting again")
                path.unlink(missing_ok=True)
        started = time.monotonic()
        model = fine_tune(self.cleanup, code, pairs, self.settings, tick)
        self.seconds += time.monotonic() - started
        keep_first(model, path)
        return load_checkpoint(path, device, expect="Cleanup").model.eval()  # the kept bytes, whoever kept them


def job_adapter(engine, options, job_dir: Path, notify: Callable[[str], None]) -> Adapter:
    """The adapter of a job: its ``engine``'s cleanup, the settings of this version."""
    if engine.restorer is None:
        notify("--adapt on learns from the face restorer's faces, and there is none: every photo keeps the shipped "
               "cleanup (`archive-restore models fetch gfpgan-v1.4`)")
    elif not engine.teaches:
        notify("--adapt on learns from GFPGAN's faces; our face restorer's are too soft to learn from (adapted to "
               "them, real photos came out softer): every photo keeps the shipped cleanup (`archive-restore models "
               "fetch gfpgan-v1.4`)")
    weights = sha256_file(find_model("cleanup_compact", list(options.models_dirs)))[:16]
    return Adapter(engine.cleanup, job_dir, weights, Adaptation(), notify=notify)


def keep_first(model: nn.Module, path: Path) -> None:
    """Save ``model`` at ``path`` unless another process did first (an exclusive link, not a rename)."""
    mine = save_checkpoint(model, path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors"))
    try:
        os.link(mine, path)
    except FileExistsError:
        pass  # another worker's adaptation of the same code is kept: the job uses one
    finally:
        mine.unlink(missing_ok=True)
