"""NIQE, the "completely blind" naturalness score (Mittal, Soundararajan and Bovik, "Making a 'Completely
Blind' Image Quality Analyzer", IEEE Signal Processing Letters 20(3), 2013). Lower is more natural.

Written here from the paper, with the usual MATLAB-compatible conventions:

1. luma Y (BT.601, as MATLAB's ``rgb2ycbcr``; ``metrics.rgb_to_y``) on the 0..255 scale, float64; the
   image is cropped (from the top left) to a multiple of 96 on each side;
2. MSCN coefficients ``(Y - mu) / (sigma + 1)``, mu and sigma the local mean and deviation under a 7x7
   Gaussian window of sigma 7/6 (replicated borders);
3. per 96x96 patch, 18 features: the generalised Gaussian fit of the MSCN (shape, variance) and, for the
   products of each coefficient with its right, lower, lower-right and lower-left neighbour (wrapped
   inside the patch, as MATLAB's ``circshift``), the asymmetric generalised Gaussian fit (shape, mean,
   left variance, right variance). Shapes come from moment matching against a table of shapes
   0.2, 0.201, ..., 10 (as in the BRISQUE and NIQE papers);
4. the same 18 features on the image halved by MATLAB's ``imresize(Y, 0.5)`` (bicubic, antialiased),
   in 48x48 patches covering the same areas: 36 features per patch;
5. the pristine model is the mean and covariance of the features of the sharp patches (mean local sigma
   above 0.75 x the image's sharpest patch) of many pristine images; a test image's score is
   ``sqrt((mu_p - mu_t)^T pinv((cov_p + cov_t) / 2) (mu_p - mu_t))`` with mu_t, cov_t over all its
   patches.

The features follow the papers' parametrisation (GGD variance; AGGD mean and the left/right sample
variances), which differs slightly from the MATLAB release's, and the pristine model is fitted here on
our own data, so the figures are ours: compare NIQE values from this module with each other, not with
published tables. Patches with no texture at all (flat areas) or a one-sided product have no defined
fit: their rows are NaN and are left out, so they never reach a mean.

The shipped model, ``models/niqe_pristine.json``, was made (and is remade) by
``archive-restore bench niqe --fit ../shared/data/train/hq_natural --out models/niqe_pristine.json``.
"""
from __future__ import annotations

import datetime
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import (
    CheckpointError,
    DataError,
    InputError,
    ModelNotFoundError,
    UsageError,
)
from ..weights.folders import REPO_MODELS
from .metrics import rgb_to_y

PATCH = 96  # patch side at full scale (48 at half scale: the same area)
MIN_SIDE = PATCH  # one patch at each scale
N_FEATURES = 36
SHARPNESS_THRESHOLD = 0.75
DEFAULT_MODEL = REPO_MODELS / "niqe_pristine.json"
FORMAT = "archive-restore NIQE pristine model"
REFIT_COMMAND = "archive-restore bench niqe --fit ../shared/data/train/hq_natural --out models/niqe_pristine.json"

_C = 1.0  # MSCN stabiliser, on the 0..255 scale
_WINDOW, _WINDOW_SIGMA = 7, 7 / 6
_FLAT = 1e-6  # MSCN mean square below this: a patch with no texture, no defined fit
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # (rows, cols): horizontal, vertical, main and anti-diagonal

# Moment-matching tables over the candidate shapes a. GGD: E[x^2] / E[|x|]^2 = G(1/a) G(3/a) / G(2/a)^2,
# falling with a (negated below to search an increasing table); AGGD: its inverse, rising with a.
_SHAPES = np.arange(200, 10001) / 1000.0
_LG1, _LG2, _LG3 = (np.array([math.lgamma(k / a) for a in _SHAPES]) for k in (1, 2, 3))
_GGD_RHO = np.exp(_LG1 + _LG3 - 2 * _LG2)
_AGGD_R = 1.0 / _GGD_RHO

ImageOrPath = np.ndarray | str | Path


# ------------------------------------------------------------------------------------------- features
def _luma(image: np.ndarray) -> np.ndarray:
    """Y on 16..235 (x 255 of ``rgb_to_y``), float64; a grey image counts as R = G = B."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UsageError(f"NIQE needs an HxW, HxWx1 or HxWx3 image; got an array of shape {img.shape}")
    if img.dtype == np.uint8:
        img = img / 255.0
    elif img.dtype == np.uint16:
        img = img / 65535.0
    else:
        img = np.clip(img.astype(np.float64), 0.0, 1.0)
    return rgb_to_y(img) * 255.0


def _mscn(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local deviation sigma."""
    blur = functools.partial(cv2.GaussianBlur, ksize=(_WINDOW, _WINDOW), sigmaX=_WINDOW_SIGMA,
                             sigmaY=_WINDOW_SIGMA, borderType=cv2.BORDER_REPLICATE)
    mu = blur(y)
    sigma = np.sqrt(np.abs(blur(y * y) - mu * mu))
    return (y - mu) / (sigma + _C), sigma


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's and most 'bicubic's)."""
    x = np.abs(x)
    return np.where(x <= 1, 1.5 * x**3 - 2.5 * x**2 + 1,
                    np.where(x <= 2, -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2, 0.0))


# Halving with antialiasing stretches the kernel by 2: 8 taps, at -3.5..3.5 input pixels from the centre.
_HALF_TAPS = _cubic((np.arange(8) - 3.5) / 2) / 2


def half_bicubic(img: np.ndarray) -> np.ndarray:
    """An image of even sides halved as MATLAB's ``imresize(img, 0.5)`` does (bicubic, antialiased,
    symmetric borders): output pixel i is centred between input pixels 2i and 2i + 1."""
    h, w = img.shape
    pad = np.pad(img, 4, mode="symmetric")
    rows = sum(t * pad[1 + k : 1 + k + h : 2] for k, t in enumerate(_HALF_TAPS))
    return sum(t * rows[:, 1 + k : 1 + k + w : 2] for k, t in enumerate(_HALF_TAPS))


def _patches(a: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size): the non-overlapping patches of ``a`` (sides a multiple of size), row by row."""
    h, w = a.shape
    return a.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def _nearest(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the entry of the increasing ``table`` nearest each value."""
    i = np.clip(np.searchsorted(table, values), 1, len(table) - 1)
    return i - ((values - table[i - 1]) <= (table[i] - values))


def fit_ggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape and variance of a zero-mean generalised Gaussian fitted to each row of ``x`` (moments)."""
    var = np.mean(x * x, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = var / np.mean(np.abs(x), axis=1) ** 2
    ok = var >= _FLAT
    shape = _SHAPES[_nearest(-_GGD_RHO, -np.where(ok, rho, 1.0))]
    return np.where(ok, shape, np.nan), np.where(ok, var, np.nan)


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shape, mean, left and right variance of an asymmetric generalised Gaussian fitted to each row."""
    neg, pos = x < 0, x > 0
    sq = x * x
    ok = (neg.sum(1) > 0) & (pos.sum(1) > 0)
    left = np.where(ok, (sq * neg).sum(1) / np.maximum(neg.sum(1), 1), np.nan)
    right = np.where(ok, (sq * pos).sum(1) / np.maximum(pos.sum(1), 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.sqrt(left / right)  # sigma_l / sigma_r
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(sq, axis=1)
        r_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    ok &= np.isfinite(r_norm)
    i = _nearest(_AGGD_R, np.where(ok, r_norm, 1.0))
    scale = np.exp((_LG1[i] - _LG3[i]) / 2)  # beta = sigma * sqrt(G(1/a) / G(3/a))
    mean = (np.sqrt(right) - np.sqrt(left)) * scale * np.exp(_LG2[i] - _LG1[i])
    return np.where(ok, _SHAPES[i], np.nan), np.where(ok, mean, np.nan), left, right


def _scale_features(mscn_patches: np.ndarray) -> np.ndarray:
    """(n, 18): the GGD fit of each patch's MSCN and the AGGD fits of its four neighbour products."""
    n = len(mscn_patches)
    flat = mscn_patches.reshape(n, -1)
    columns = list(fit_ggd(flat))
    for shift in _SHIFTS:
        product = mscn_patches * np.roll(mscn_patches, shift, axis=(1, 2))
        columns += fit_aggd(product.reshape(n, -1))
    return np.stack(columns, axis=1)


def patch_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, sharpness) of every 96x96 patch: (n, 36) and (n,). Rows of patches without a defined
    fit (flat areas) hold NaN. Raises InputError for an image smaller than 96x96."""
    y = _luma(image)
    if min(y.shape) < MIN_SIDE:
        raise InputError(f"image of {y.shape[1]}x{y.shape[0]} pixels is too small for NIQE: it needs at "
                         f"least {MIN_SIDE}x{MIN_SIDE} (one {PATCH} px patch, {PATCH // 2} px at half scale)")
    h, w = y.shape[0] // PATCH * PATCH, y.shape[1] // PATCH * PATCH
    y = y[:h, :w]
    columns, sharpness = [], None
    for scale in (1, 2):
        if scale == 2:
            y = half_bicubic(y)
        mscn, sigma = _mscn(y)
        if scale == 1:
            sharpness = _patches(sigma, PATCH).mean(axis=(1, 2))
        columns.append(_scale_features(_patches(mscn, PATCH // scale)))
    return np.concatenate(columns, axis=1), sharpness


def _finite_rows(features: np.ndarray) -> np.ndarray:
    return features[np.isfinite(features).all(axis=1)]


# ------------------------------------------------------------------------------------------- the model
@dataclass
class PristineModel:
    """Mean (36,) and covariance (36, 36) of the features of pristine patches, with where they came from."""

    mu: np.ndarray
    cov: np.ndarray
    provenance: dict = field(default_factory=dict)

    def distance(self, features: np.ndarray) -> float:
        """NIQE of a test image given its patches' features (finite rows only, at least one)."""
        mu = features.mean(axis=0)
        cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros_like(self.cov)
        d = self.mu - mu
        return float(np.sqrt(max(0.0, d @ np.linalg.pinv((self.cov + cov) / 2) @ d)))

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (one covariance row per line); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = json.dumps({"format": FORMAT, "n_features": N_FEATURES, "provenance": self.provenance}, indent=2)
        rows = ",\n    ".join(json.dumps(row) for row in self.cov.tolist())
        path.write_text(f'{head[:-2]},\n  "mu": {json.dumps(self.mu.tolist())},\n  "cov": [\n    {rows}\n  ]\n}}\n')
        return path


def load_pristine(path: str | Path | None = None) -> PristineModel:
    """The pristine model in ``path`` (default ``models/niqe_pristine.json``), checked for shape and symmetry."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise ModelNotFoundError(f"NIQE pristine model {path} not found; refit it with `{REFIT_COMMAND}`")
    try:
        data = json.loads(path.read_text())
        mu, cov = np.asarray(data["mu"], dtype=np.float64), np.asarray(data["cov"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a NIQE pristine model ({exc.__class__.__name__}: {exc})") from exc
    if data.get("format") != FORMAT or mu.shape != (N_FEATURES,) or cov.shape != (N_FEATURES, N_FEATURES):
        raise CheckpointError(f"{path} is not a NIQE pristine model: format {data.get('format')!r}, mu {mu.shape}, "
                              f"cov {cov.shape} (expected {FORMAT!r}, ({N_FEATURES},), ({N_FEATURES}, {N_FEATURES}))")
    if not (np.isfinite(mu).all() and np.isfinite(cov).all() and np.allclose(cov, cov.T)):
        raise CheckpointError(f"{path}: the NIQE model's mean or covariance is not finite, "
                              "or the covariance is not symmetric")
    return PristineModel(mu, cov, data.get("provenance", {}))


@functools.lru_cache(maxsize=1)
def _default_model() -> PristineModel:
    return load_pristine()


def niqe(image: np.ndarray, model: PristineModel | None = None) -> float:
    """NIQE of an HxWx3 RGB, HxW or HxWx1 grey image (float in [0, 1], uint8 or uint16); lower is more
    natural. ``model`` defaults to the shipped pristine model. Raises InputError when the image is
    smaller than 96x96 or has no textured patch at all."""
    model = model if model is not None else _default_model()
    features = _finite_rows(patch_features(image)[0])
    if not len(features):
        raise InputError("NIQE is undefined for this image: none of its 96 px patches has any texture")
    return model.distance(features)


def niqe_or_none(image: np.ndarray, model: PristineModel | None = None) -> float | None:
    """NIQE, or None where it is undefined (an image too small, or without texture)."""
    try:
        return niqe(image, model)
    except InputError:
        return None


def _images(items: Iterable[ImageOrPath]) -> Iterable[tuple[str, np.ndarray | Path]]:
    """(name, array or file): folders expand to their image files (recursive)."""
    from ..media.folders import image_files

    for k, item in enumerate(items):
        if isinstance(item, np.ndarray):
            yield f"array {k}", item
        elif Path(item).is_dir():
            yield from ((str(p), p) for p in image_files(Path(item)))
        else:
            yield str(item), Path(item)


def fit_pristine(images: Iterable[ImageOrPath], sharpness_threshold: float = SHARPNESS_THRESHOLD,
                 provenance: dict | None = None, progress: bool = False) -> PristineModel:
    """Fit the pristine model on images (arrays, image files, or folders searched recursively): the mean
    and covariance of the features of each image's patches sharper than ``sharpness_threshold`` x its
    sharpest patch. Images smaller than 96x96 are skipped; ``provenance`` is added to the model's record."""
    from ..media.folders import load_rgb

    kept, used, skipped = [], 0, []
    for name, item in tqdm(list(_images(images)), disable=not progress, unit="image", desc="NIQE fit"):
        img = load_rgb(item) if isinstance(item, Path) else item
        try:
            features, sharpness = patch_features(img)
        except InputError:
            skipped.append(name)
            continue
        kept.append(_finite_rows(features[sharpness > sharpness_threshold * sharpness.max()]))
        used += 1
    features = np.concatenate(kept) if kept else np.zeros((0, N_FEATURES))
    if len(features) < 2:
        raise DataError(f"NIQE fit: {len(features)} usable patches from {used} images ({len(skipped)} too small); "
                        "it needs pristine images of at least 96x96 with texture")
    record = {"images": used, "images_skipped_too_small": skipped, "patches": len(features), "patch_size": PATCH,
              "sharpness_threshold": sharpness_threshold, "date": datetime.date.today().isoformat(),
              **(provenance or {})}
    cov = np.cov(features, rowvar=False)
    return PristineModel(features.mean(axis=0), (cov + cov.T) / 2, record)
