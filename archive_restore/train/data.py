"""Training data held in memory: HQ natural images, HQ aligned faces, real LQ/HQ face pairs.

Everything is read once (uint8, to keep memory small) and cropped at random per step. The layout
of ``../shared/data/train`` is the default; any folder of images works.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from ..media.folders import image_files, load_rgb, to_float

# Held out of training: the quality benchmark pairs eval images with these faces.
HELD_OUT_FACES = "faces256"


class ImageBank:
    """HQ images from which random square crops are drawn."""

    def __init__(self, images: list[np.ndarray], source: str):
        if not images:
            raise DataError(f"no usable training images in {source}")
        self.images, self.source = images, source

    @classmethod
    def from_folder(cls, folder: Path, crop: int, exclude: tuple[str, ...] = (), max_side: int = 640) -> "ImageBank":
        imgs = [load_rgb(p, max_side) for p in image_files(folder, exclude)]
        return cls([im for im in imgs if min(im.shape[:2]) >= crop], str(folder))

    def crop(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random ``size`` x ``size`` float crop, randomly flipped."""
        img = self.images[rng.integers(len(self.images))]
        y = rng.integers(img.shape[0] - size + 1)
        x = rng.integers(img.shape[1] - size + 1)
        out = img[y : y + size, x : x + size]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return to_float(np.ascontiguousarray(out))

    def photo(self, rng: np.random.Generator) -> np.ndarray:
        """A whole image (float), randomly flipped."""
        img = self.images[rng.integers(len(self.images))]
        return to_float(np.ascontiguousarray(img[:, ::-1] if rng.random() < 0.5 else img))

    def __len__(self) -> int:
        return len(self.images)


class FaceBank:
    """Aligned HQ faces, resized once to ``size`` x ``size``."""

    def __init__(self, folder: Path, size: int, exclude: tuple[str, ...] = (HELD_OUT_FACES,)):
        files = image_files(folder, exclude)
        if not files:
            raise DataError(f"no face images in {folder}")
        self.faces = [cv2.resize(load_rgb(p), (size, size), interpolation=cv2.INTER_AREA) for p in files]
        self.source = str(folder)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        face = self.faces[rng.integers(len(self.faces))]
        if rng.random() < 0.5:
            face = face[:, ::-1]
        return to_float(np.ascontiguousarray(face))

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class RealPair:
    lq: np.ndarray
    hq: np.ndarray
    name: str


def find_real_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(LQ, HQ) file pairs: every folder named ``LQ`` beside a folder whose name starts with ``HQ`` or
    ``PseudoHQ``, matched by file stem."""
    pairs = []
    for lq_dir in sorted(p for p in Path(root).rglob("LQ") if p.is_dir()):
        for hq_dir in sorted(p for p in lq_dir.parent.iterdir() if p.is_dir() and p.name.startswith(("HQ", "PseudoHQ"))):
            hq_by_stem = {p.stem: p for p in image_files(hq_dir)}
            pairs += [(lq, hq_by_stem[lq.stem]) for lq in image_files(lq_dir) if lq.stem in hq_by_stem]
    return pairs


def load_real_pairs(roots: list[Path], size: int) -> list[RealPair]:
    """Real degraded faces and their restored counterparts, both resized to ``size``."""
    out = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        for lq_path, hq_path in find_real_pairs(root):
            lq = cv2.resize(load_rgb(lq_path), (size, size), interpolation=cv2.INTER_AREA)
            hq = cv2.resize(load_rgb(hq_path), (size, size), interpolation=cv2.INTER_AREA)
            out.append(RealPair(to_float(lq), to_float(hq), f"{lq_path.parent.parent.name}/{lq_path.name}"))
    return out
