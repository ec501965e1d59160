"""Compression stages: JPEG (OpenCV's encoder) and a video-codec-like block DCT quantiser."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ._image import clip01, hwc, to_uint8
from .stages import Stage, require


def jpeg_encode(img: np.ndarray, quality: int) -> bytes:
    """Encode a float32 H x W x C RGB (or gray) image as JPEG at `quality` (1..100)."""
    pixels = to_uint8(img)
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {img.shape}")
    return buf.tobytes()


def jpeg_decode(data: bytes, channels: int) -> np.ndarray:
    """Decode JPEG bytes to a float32 H x W x channels RGB (or gray) image in [0, 1]."""
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if channels == 3:
        pixels = pixels[:, :, ::-1]
    return hwc(pixels.astype(np.float32) * np.float32(1.0 / 255.0))


@dataclass(frozen=True)
class JpegCompression(Stage):
    """Round trip through JPEG at `quality` (30 = heavy blocking/ringing, 95 = nearly clean).

    OpenCV's encoder subsamples chroma 4:2:0 for colour images, like most cameras and web tools.
    """

    kind = "jpeg"
    quality: int

    def __post_init__(self) -> None:
        require(1 <= self.quality <= 100, f"JPEG quality must be in 1..100, got {self.quality}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return jpeg_decode(jpeg_encode(img, self.quality), img.shape[2])


@lru_cache(maxsize=8)
def _dct_matrix(block: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (coefficients = D @ block @ D.T)."""
    n = np.arange(block)
    mat = np.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * block)) * math.sqrt(2.0 / block)
    mat[0] /= math.sqrt(2.0)
    return mat.astype(np.float32)


@lru_cache(maxsize=64)
def _quant_steps(block: int, qstep: float) -> np.ndarray:
    """Quantiser step per coefficient: `qstep` for DC, growing linearly with spatial frequency
    (up to 8x at the highest), as in codec quantisation matrices."""
    freq = np.arange(block)
    ramp = (freq[:, None] + freq[None, :]) / (2 * (block - 1))
    return (qstep * (1.0 + 7.0 * ramp)).astype(np.float32)


def block_dct_quantise(plane: np.ndarray, block: int, qstep: float) -> np.ndarray:
    """Quantise an H x W plane in non-overlapping block x block DCT blocks (edges padded)."""
    h, w = plane.shape
    hp, wp = -(-h // block) * block, -(-w // block) * block
    padded = np.pad(plane, ((0, hp - h), (0, wp - w)), mode="edge")
    blocks = padded.reshape(hp // block, block, wp // block, block).transpose(0, 2, 1, 3)
    dct, steps = _dct_matrix(block), _quant_steps(block, qstep)
    coef = dct @ blocks @ dct.T
    coef = np.round(coef / steps) * steps
    blocks = dct.T @ coef @ dct
    return blocks.transpose(0, 2, 1, 3).reshape(hp, wp)[:h, :w]


@dataclass(frozen=True)
class VideoCodec(Stage):
    """Video-codec-like damage: YCrCb, chroma at half resolution (4:2:0), and coarse block-DCT
    quantisation of `block` x `block` macroblocks (8 or 16) with DC step `qstep` (chroma: 2x).

    Gives the flat blocky look and colour bleeding of low-bitrate MPEG/DV/VHS-to-DVD transfers.
    """

    kind = "video_codec"
    qstep: float
    block: int = 16

    def __post_init__(self) -> None:
        require(self.qstep > 0, f"codec qstep must be > 0, got {self.qstep}")
        require(self.block in (8, 16), f"codec block must be 8 or 16, got {self.block}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if img.shape[2] == 1:
            return clip01(block_dct_quantise(img[:, :, 0], self.block, self.qstep)[:, :, None])
        h, w, _ = img.shape
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
        planes = [block_dct_quantise(ycc[:, :, 0], self.block, self.qstep)]
        small = (max(1, w // 2), max(1, h // 2))
        for ch in (1, 2):
            chroma = cv2.resize(ycc[:, :, ch], small, interpolation=cv2.INTER_AREA)
            chroma = block_dct_quantise(chroma, self.block, 2 * self.qstep)
            planes.append(cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR))
        merged = np.ascontiguousarray(np.stack(planes, axis=2), dtype=np.float32)
        return clip01(cv2.cvtColor(merged, cv2.COLOR_YCrCb2RGB))
