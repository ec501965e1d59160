"""Array helpers shared by the stages: layout checks, channel bookkeeping, luminance.

Inside the package every image is a C-contiguous float32 array H x W x C with C = 1 or 3 (RGB).
OpenCV drops a trailing channel axis of size 1, so results go through `hwc()` to get it back.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

# Rec. 601 luma weights, the ones JPEG and OpenCV's YCrCb use.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def as_hwc(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return (float32 H x W x C array, was_2d). Accepts H x W, H x W x 1 and H x W x 3 float images."""
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"expected a float image with values in [0, 1], got dtype {arr.dtype}; "
                         "convert it first (e.g. uint8 / 255)")
    was_2d = arr.ndim == 2
    if was_2d:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise InputError(f"expected an image of shape HxW, HxWx1 or HxWx3, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32), was_2d


def hwc(result: np.ndarray) -> np.ndarray:
    """Give an OpenCV result back its channel axis (cv2 returns H x W for an H x W x 1 input)."""
    if result.ndim == 2:
        result = result[:, :, None]
    return result if result.dtype == np.float32 else result.astype(np.float32)


def luminance(img: np.ndarray) -> np.ndarray:
    """H x W luma of an H x W x C image (the single channel itself for gray images)."""
    if img.shape[2] == 1:
        return img[:, :, 0]
    return img[:, :, 0] * LUMA[0] + img[:, :, 1] * LUMA[1] + img[:, :, 2] * LUMA[2]


def per_channel(values: tuple[float, float, float], channels: int) -> np.ndarray:
    """An RGB triple as a broadcastable vector; its luma-weighted mean for gray images."""
    vec = np.asarray(values, dtype=np.float32)
    if channels == 1:
        return np.array([float(vec @ LUMA)], dtype=np.float32)
    return vec


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a [0, 1] float image to uint8 (values outside [0, 1] are clipped)."""
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def clip01(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place and return the array."""
    return np.clip(img, 0.0, 1.0, out=img)
