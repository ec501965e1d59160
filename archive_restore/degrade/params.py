"""The degradation's parameter vector: what the degradation encoder is trained to predict.

Each entry summarises the *effective* strength of one kind of damage over the whole chain, is
roughly in [0, 1] (clipped), and is 0 when that damage is absent. Sizes are first converted to HQ
pixels (a stage working after a 3x shrink has 3x larger HQ-pixel sizes), amplitudes to what is
left of them in the output. The entries, in order:

  blur_sigma       total blur std: sqrt(trace(sum of stage covariances) / 2), HQ px / 6
  blur_anisotropy  1 - sqrt(lambda_min / lambda_max) of that total covariance (0 = round blur)
  motion_blur      total motion-blur length, HQ px / 12
  defocus_blur     largest defocus disc radius, HQ px / 5
  resample_loss    log2(coarsest intermediate resolution vs. output) / 0.75 (detail lost by a
                   shrink below the output size and re-enlargement); 0 for a direct resize
  gaussian_noise   output-equivalent std of all Gaussian noise / 0.12
  poisson_noise    output-equivalent mid-grey std of all Poisson noise / 0.12
  noise_color      share of that noise variance that is per-channel (colour) noise
  film_grain       output-equivalent mid-grey std of the grain / 0.10
  grain_size       grain std in output px / 1.0 (0 without grain)
  jpeg             worst JPEG quality q mapped to (100 - q) / 70 (q 30 -> 1, q 95 -> 0.07)
  video_codec      strongest codec DC step / 0.15
  halftone         strongest halftone amount
  fade             combined fade amount 1 - prod(1 - amount)
  cast_r/g/b       how far mid-grey's channel ends up above its lowest channel after all fade and
                   colour-cast stages, / 0.25 (sepia: r high, b 0; neutral: all 0)
  dust             specks per 10 000 output px / 40
  scratches        scratch count x opacity / 3
  interlace        |field shift| in output px / 3 + 5 |field gain - 1|

"Output-equivalent" std: noise added before a shrink by d is averaged over d x d output
footprints, so its std is divided by d, except that noise correlated over an area A (grain) keeps
min(1, sqrt(A) / d) of it. Later blur and compression are ignored (an approximation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .archive import ColorCast, DustScratches, Fade, Halftone, Interlace
from .blur import AnisotropicBlur, DefocusBlur, GaussianBlur, MotionBlur
from .compress import JpegCompression, VideoCodec
from .noise import FilmGrain, GaussianNoise, PoissonNoise
from .resample import Resize
from .stages import Stage

PARAM_NAMES: tuple[str, ...] = (
    "blur_sigma", "blur_anisotropy", "motion_blur", "defocus_blur", "resample_loss",
    "gaussian_noise", "poisson_noise", "noise_color", "film_grain", "grain_size",
    "jpeg", "video_codec", "halftone", "fade", "cast_r", "cast_g", "cast_b",
    "dust", "scratches", "interlace",
)
PARAM_DIM = len(PARAM_NAMES)

_BLURS = (GaussianBlur, AnisotropicBlur, MotionBlur, DefocusBlur)


@dataclass
class _Totals:
    """Running sums while walking the chain (all sizes in HQ px)."""

    scale: int
    hq_px: float = 1.0  # HQ pixels per pixel of the current image
    coarsest: float = 1.0
    blur_cov: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    motion: float = 0.0
    defocus: float = 0.0
    gauss_var: float = 0.0
    poisson_var: float = 0.0
    color_var: float = 0.0
    grain_var: float = 0.0
    grain_size: float = 0.0
    jpeg: float = 0.0
    codec: float = 0.0
    halftone: float = 0.0
    keep: float = 1.0  # product of (1 - fade amount)
    grey: np.ndarray = field(default_factory=lambda: np.full((1, 1, 3), 0.5, np.float32))
    dust: float = 0.0
    scratches: float = 0.0
    interlace: float = 0.0

    def survival(self, corr_area: float = 1.0) -> float:
        """Share of a noise std, added now, that survives the rest of the chain's shrinking."""
        shrink = self.scale / self.hq_px
        return min(1.0, math.sqrt(corr_area) / shrink) if shrink > 1 else 1.0


def _add_blur(t: _Totals, stage: Stage) -> None:
    t.blur_cov += stage.covariance() * t.hq_px**2
    if isinstance(stage, MotionBlur):
        t.motion += stage.length * t.hq_px
    if isinstance(stage, DefocusBlur):
        t.defocus = max(t.defocus, stage.radius * t.hq_px)


def _add_noise(t: _Totals, stage: Stage) -> None:
    if isinstance(stage, GaussianNoise):
        var = (stage.std * t.survival()) ** 2
        t.gauss_var += var
    elif isinstance(stage, PoissonNoise):
        var = (stage.mid_grey_std() * t.survival()) ** 2
        t.poisson_var += var
    else:  # FilmGrain: correlated over ~4 pi size^2 px
        corr_area = max(1.0, 4.0 * math.pi * stage.size**2)
        t.grain_var += (stage.strength * t.survival(corr_area)) ** 2
        t.grain_size = max(t.grain_size, stage.size * t.hq_px / t.scale)
        return
    t.color_var += var if stage.color else 0.0


def _add_archive(t: _Totals, stage: Stage) -> None:
    if isinstance(stage, (Fade, ColorCast)):
        t.grey = stage.apply(t.grey, np.random.default_rng(0))
        if isinstance(stage, Fade):
            t.keep *= 1.0 - stage.amount
    elif isinstance(stage, Halftone):
        t.halftone = max(t.halftone, stage.amount)
    elif isinstance(stage, DustScratches):
        t.dust += stage.speck_density * (t.scale / t.hq_px) ** 2
        t.scratches += stage.scratches * stage.opacity
    elif isinstance(stage, Interlace):
        t.interlace += abs(stage.shift) * t.hq_px / t.scale / 3.0 + 5.0 * abs(stage.field_gain - 1.0)


def _walk(t: _Totals, stage: Stage) -> None:
    if isinstance(stage, Resize):
        t.hq_px *= stage.factor
        t.coarsest = max(t.coarsest, t.hq_px)
    elif isinstance(stage, _BLURS):
        _add_blur(t, stage)
    elif isinstance(stage, (GaussianNoise, PoissonNoise, FilmGrain)):
        _add_noise(t, stage)
    elif isinstance(stage, JpegCompression):
        t.jpeg = max(t.jpeg, (100 - stage.quality) / 70.0)
    elif isinstance(stage, VideoCodec):
        t.codec = max(t.codec, stage.qstep / 0.15)
    else:
        _add_archive(t, stage)


def params_vector(stages: tuple[Stage, ...], scale: int) -> np.ndarray:
    """The PARAM_DIM summary of a chain of stages whose resizes shrink by `scale` in total."""
    t = _Totals(scale=scale)
    for stage in stages:
        _walk(t, stage)
    eig = np.linalg.eigvalsh(t.blur_cov)
    noise_var = t.gauss_var + t.poisson_var
    cast = (t.grey[0, 0] - t.grey[0, 0].min()) / 0.25
    values = [
        math.sqrt(max(eig.sum(), 0.0) / 2.0) / 6.0,
        1.0 - math.sqrt(max(eig[0], 0.0) / eig[1]) if eig[1] > 1e-12 else 0.0,
        t.motion / 12.0,
        t.defocus / 5.0,
        math.log2(max(t.coarsest / scale, 1.0)) / 0.75,
        math.sqrt(t.gauss_var) / 0.12,
        math.sqrt(t.poisson_var) / 0.12,
        t.color_var / noise_var if noise_var > 0 else 0.0,
        math.sqrt(t.grain_var) / 0.10,
        t.grain_size,
        t.jpeg,
        t.codec,
        t.halftone,
        1.0 - t.keep,
        *cast,
        t.dust / 40.0,
        t.scratches / 3.0,
        t.interlace,
    ]
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
