"""Folders of images read as plain uint8 RGB arrays: the data sets that training, the benchmarks and NIQE
read (not the user's photos: those go through ``walk`` and ``image``, which keep everything a file holds)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def image_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), skipping sub-folders named in ``exclude``."""
    files = [
        p for p in sorted(Path(folder).rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and not (set(p.relative_to(folder).parts[:-1]) & set(exclude))
    ]
    return files


def load_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB, optionally shrunk (area) so its longer side is at most ``max_side``."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}")
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if max_side and max(img.shape[:2]) > max_side:
        f = max_side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return img


def to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0
