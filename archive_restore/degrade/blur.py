"""Blur stages: isotropic and anisotropic Gaussian, motion (a line), defocus (a disc).

Each blur also reports its kernel's 2x2 spatial covariance (pixels^2, x then y). Convolution adds
covariances, so the chain's total blur is the sum of its stages' covariances (after converting
them to HQ pixels); see `params.py`. Angles are in radians, counter-clockwise from the x axis with
y pointing down the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ._image import hwc
from .stages import Stage, require

_BORDER = cv2.BORDER_REFLECT_101


def _rotated_covariance(var_u: float, var_v: float, theta: float) -> np.ndarray:
    """Covariance with variance var_u along direction theta and var_v across it."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([var_u, var_v]) @ rot.T


# OpenCV's direct 2-D filter is fast up to 11 x 11; beyond, its own DFT path is slow for 3
# channels, so larger kernels go through `_fft_filter`.
_DIRECT_MAX = 11


def _normalised(kernel: np.ndarray) -> np.ndarray:
    """Kernel / sum as read-only float32, with negligible taps set to 0: exp() tails would
    otherwise be subnormal floats, which slow OpenCV's filter down 20-fold."""
    kernel = np.where(kernel > 1e-7 * kernel.max(), kernel, 0.0)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    kernel.setflags(write=False)
    return kernel


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate with a centrally symmetric kernel (= convolve), reflecting at the borders."""
    if kernel.shape[0] <= _DIRECT_MAX:
        return hwc(cv2.filter2D(img, cv2.CV_32F, kernel, borderType=_BORDER))
    return _fft_filter(img, kernel)


def _fft_filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution through cv2.dft: pad by the kernel radius r on every side (reflecting), multiply
    spectra; the linear convolution of pixel p then sits at index p + 2r of the circular result."""
    h, w, channels = img.shape
    r = kernel.shape[0] // 2
    ph, pw = cv2.getOptimalDFTSize(h + 2 * r), cv2.getOptimalDFTSize(w + 2 * r)
    padded = cv2.copyMakeBorder(img, r, ph - h - r, r, pw - w - r, _BORDER)
    padded = padded.reshape(ph, pw, channels)
    kernel_pad = np.zeros((ph, pw), np.float32)
    kernel_pad[: kernel.shape[0], : kernel.shape[1]] = kernel
    spectrum = cv2.dft(kernel_pad)
    out = np.empty_like(img)
    for c in range(channels):
        plane = cv2.dft(np.ascontiguousarray(padded[:, :, c]))
        plane = cv2.idft(cv2.mulSpectrums(plane, spectrum, 0), flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        out[:, :, c] = plane[2 * r: 2 * r + h, 2 * r: 2 * r + w]
    return out


@lru_cache(maxsize=512)
def anisotropic_kernel(sigma_u: float, sigma_v: float, theta: float) -> np.ndarray:
    """Normalised Gaussian kernel with std sigma_u along angle theta and sigma_v across it."""
    radius = max(1, math.ceil(3.0 * max(sigma_u, sigma_v)))
    coords = np.arange(-radius, radius + 1, dtype=np.float64)
    x, y = np.meshgrid(coords, coords)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    kernel = np.exp(-0.5 * ((u / sigma_u) ** 2 + (v / sigma_v) ** 2))
    return _normalised(kernel)


@lru_cache(maxsize=512)
def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised line kernel: a uniform segment of `length` px through the centre at `angle`.

    Points along the segment are splatted bilinearly, so fractional lengths and any angle work.
    """
    half = length / 2.0
    radius = max(1, math.ceil(half))
    size = 2 * radius + 1
    t = np.linspace(-half, half, max(2, math.ceil(length * 4)))
    x = radius + t * math.cos(angle)
    y = radius + t * math.sin(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    kernel = np.zeros((size + 1, size + 1))
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    kernel = kernel[:size, :size]
    return _normalised(kernel)


@lru_cache(maxsize=512)
def disc_kernel(radius: float) -> np.ndarray:
    """Normalised disc (out-of-focus) kernel; edge pixels get their covered area (8x8 supersampling)."""
    r = max(1, math.ceil(radius))
    size, ss = 2 * r + 1, 8
    fine = (np.arange(size * ss) + 0.5) / ss - (r + 0.5)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius**2
    kernel = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))
    return _normalised(kernel)


@dataclass(frozen=True)
class GaussianBlur(Stage):
    """Isotropic Gaussian blur (lens softness, scanner optics) of std `sigma` px."""

    kind = "gaussian_blur"
    sigma: float

    def __post_init__(self) -> None:
        require(self.sigma > 0, f"blur sigma must be > 0, got {self.sigma}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return hwc(cv2.GaussianBlur(img, (0, 0), self.sigma, borderType=_BORDER))

    def covariance(self) -> np.ndarray:
        return np.eye(2) * self.sigma**2


@dataclass(frozen=True)
class AnisotropicBlur(Stage):
    """Rotated Gaussian: std `sigma_u` along angle `theta`, `sigma_v` across it (astigmatism, shake)."""

    kind = "anisotropic_blur"
    sigma_u: float
    sigma_v: float
    theta: float

    def __post_init__(self) -> None:
        require(self.sigma_u > 0 and self.sigma_v > 0, "anisotropic blur sigmas must be > 0")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _filter(img, anisotropic_kernel(self.sigma_u, self.sigma_v, self.theta))

    def covariance(self) -> np.ndarray:
        return _rotated_covariance(self.sigma_u**2, self.sigma_v**2, self.theta)


@dataclass(frozen=True)
class MotionBlur(Stage):
    """Linear motion blur: the image smeared uniformly along a `length` px segment at `angle`."""

    kind = "motion_blur"
    length: float
    angle: float

    def __post_init__(self) -> None:
        require(self.length >= 1, f"motion blur length must be >= 1 px, got {self.length}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _filter(img, motion_kernel(self.length, self.angle))

    def covariance(self) -> np.ndarray:
        # A uniform segment of length L has variance L^2 / 12 along its direction.
        return _rotated_covariance(self.length**2 / 12.0, 0.0, self.angle)


@dataclass(frozen=True)
class DefocusBlur(Stage):
    """Out-of-focus blur: convolution with a uniform disc of `radius` px."""

    kind = "defocus_blur"
    radius: float

    def __post_init__(self) -> None:
        require(self.radius >= 0.5, f"defocus radius must be >= 0.5 px, got {self.radius}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _filter(img, disc_kernel(self.radius))

    def covariance(self) -> np.ndarray:
        # A uniform disc of radius R has variance R^2 / 4 along each axis.
        return np.eye(2) * self.radius**2 / 4.0
