"""Image quality metrics as SR papers report them: PSNR and SSIM on the luma (Y) channel, with a
border of ``shave`` pixels left out."""
from __future__ import annotations

import cv2
import numpy as np


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB float image in [0,1], on the [16, 235] / 255 scale (as MATLAB's rgb2ycbcr)."""
    img = img.astype(np.float64)
    return (16.0 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def _shave(y: np.ndarray, shave: int) -> np.ndarray:
    return y[shave:-shave, shave:-shave] if shave > 0 else y


def psnr_y(restored: np.ndarray, reference: np.ndarray, shave: int = 4) -> float:
    a, b = _shave(rgb_to_y(np.clip(restored, 0, 1)), shave), _shave(rgb_to_y(reference), shave)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim_y(restored: np.ndarray, reference: np.ndarray, shave: int = 4) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) on the Y channel."""
    a = _shave(rgb_to_y(np.clip(restored, 0, 1)), shave) * 255
    b = _shave(rgb_to_y(reference), shave) * 255
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
