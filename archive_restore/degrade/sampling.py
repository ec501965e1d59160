"""The random degradation distribution used for training (a second-order chain, as in
Real-ESRGAN, plus archive effects).

A sampled chain, in order:
  1. marks of the film or print at HQ resolution, each with its own probability: film grain, a
     halftone screen, dust and scratches;
  2. first order: blur -> resize -> [fading, colour cast] -> noise -> compression (each stage but
     the resize optional). Fading and casts are per-pixel affine maps, which commute with blur and
     resizing (both average with weights summing to 1), so applying them after the first resize
     gives the look of a faded print that was then scanned, at a fraction of the cost;
  3. with some probability a second order: blur -> resize to the output size -> noise -> compression;
  4. interlacing (video captures), inserted before the last compression.

Each sample first draws a severity: "light" (20 %: mild blur, little noise, high JPEG quality,
rare archive effects), "medium" (65 %: the wide default ranges) or "heavy" (15 %: strong blur and
noise, low JPEG quality, always second order, archive effects twice as likely). All sizes below
are in HQ pixels unless said otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .archive import ColorCast, DustScratches, Fade, Halftone, Interlace
from .blur import AnisotropicBlur, DefocusBlur, GaussianBlur, MotionBlur
from .compress import JpegCompression, VideoCodec
from .noise import FilmGrain, GaussianNoise, PoissonNoise
from .resample import INTERPOLATIONS, Resize
from .stages import Stage

SEVERITY_SHARES = {"light": 0.2, "medium": 0.65, "heavy": 0.15}


@dataclass(frozen=True)
class Profile:
    """Probabilities and ranges of one severity level."""

    blur_p: float
    blur_sigma: tuple[float, float]
    second_order_p: float
    noise_p: float
    noise_std: tuple[float, float]
    compress_p: float
    jpeg_quality: tuple[int, int]
    archive: float  # multiplier of the archive effects' probabilities


PROFILES = {
    "light": Profile(0.7, (0.2, 0.8), 0.0, 0.5, (0.0, 0.02), 0.6, (75, 95), 0.3),
    "medium": Profile(0.9, (0.2, 3.0), 0.5, 0.85, (0.005, 0.10), 0.85, (30, 95), 1.0),
    "heavy": Profile(1.0, (1.0, 3.0), 1.0, 1.0, (0.03, 0.12), 1.0, (30, 60), 2.0),
}

# Base probabilities of the archive effects (times Profile.archive).
ARCHIVE_P = {"grain": 0.35, "halftone": 0.08, "fade": 0.35, "cast": 0.35, "dust": 0.2, "interlace": 0.08}


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def sample_blur(rng: np.random.Generator, sigma: tuple[float, float]) -> Stage:
    """Isotropic 45 %, anisotropic 30 %, motion 10 %, defocus 15 %, all of similar std range."""
    kind = rng.choice(4, p=[0.45, 0.3, 0.1, 0.15])
    if kind == 0:
        return GaussianBlur(_u(rng, sigma))
    if kind == 1:
        return AnisotropicBlur(_u(rng, sigma), _u(rng, (sigma[0], max(sigma[0], sigma[1] / 2))),
                               _u(rng, (0.0, math.pi)))
    if kind == 2:  # line std = length / sqrt(12)
        return MotionBlur(max(1.0, _u(rng, sigma) * math.sqrt(12)), _u(rng, (0.0, math.pi)))
    return DefocusBlur(max(0.5, 2.0 * _u(rng, sigma)))  # disc std = radius / 2


def sample_noise(rng: np.random.Generator, std: tuple[float, float]) -> Stage:
    """Gaussian 60 % / Poisson 40 % (same mid-grey std range); colour noise 60 %, else gray."""
    color = bool(rng.random() < 0.6)
    value = max(_u(rng, std), 1e-4)
    if rng.random() < 0.6:
        return GaussianNoise(value, color)
    return PoissonNoise(0.5 / value**2, color)


def sample_compression(rng: np.random.Generator, quality: tuple[int, int], video_p: float) -> Stage:
    """JPEG at a uniform quality, or (with probability video_p) the video-codec quantiser."""
    if rng.random() < video_p:
        return VideoCodec(_u(rng, (0.02, 0.15)), int(rng.choice([8, 16])))
    return JpegCompression(int(rng.integers(quality[0], quality[1] + 1)))


def _interp(rng: np.random.Generator) -> str:
    return str(rng.choice(sorted(INTERPOLATIONS)))


def _archive_p(mult: float) -> dict[str, float]:
    return {name: min(1.0, base * mult) for name, base in ARCHIVE_P.items()}


def sample_marks(rng: np.random.Generator, scale: int, mult: float) -> list[Stage]:
    """Grain, halftone, dust & scratches at HQ resolution, sized so that they remain visible after
    the shrink by `scale`."""
    p = _archive_p(mult)
    stages: list[Stage] = []
    if rng.random() < p["grain"]:
        stages.append(FilmGrain(_u(rng, (0.02, 0.10)), max(0.5, _u(rng, (0.3, 0.8)) * scale)))
    if rng.random() < p["halftone"]:
        stages.append(Halftone(_u(rng, (2.5, 5.0)) * scale, _u(rng, (0.0, math.pi / 2)), _u(rng, (0.4, 1.0))))
    if rng.random() < p["dust"]:
        stages.append(DustScratches(
            speck_density=_u(rng, (3.0, 40.0)) / scale**2, speck_radius=_u(rng, (0.4, 1.2)) * scale,
            scratches=int(rng.integers(0, 4)), scratch_width=_u(rng, (0.6, 1.5)) * scale,
            light_fraction=_u(rng, (0.0, 1.0)), opacity=_u(rng, (0.4, 1.0))))
    return stages


def sample_tone(rng: np.random.Generator, mult: float) -> list[Stage]:
    """Fading toward a (yellowish) paper tone and a colour cast, possibly sepia toning."""
    p = _archive_p(mult)
    stages: list[Stage] = []
    if rng.random() < p["fade"]:
        bright, yellow = _u(rng, (0.75, 0.97)), _u(rng, (0.0, 0.15))
        stages.append(Fade(_u(rng, (0.05, 0.45)), (bright, bright * (1 - yellow / 2), bright * (1 - yellow))))
    if rng.random() < p["cast"]:
        sepia = _u(rng, (0.3, 1.0)) if rng.random() < 0.3 else 0.0
        gains = tuple(_u(rng, (0.88, 1.12)) for _ in range(3))
        offsets = tuple(_u(rng, (-0.04, 0.04)) for _ in range(3))
        stages.append(ColorCast(gains, offsets, sepia))
    return stages


def _first_order_factor(rng: np.random.Generator, scale: int, second_order: bool) -> float:
    """Shrink of the first resize: straight to the output size, or (before a second order) to an
    intermediate size of 0.6..1.4 x the output size, never above the HQ size."""
    if not second_order:
        return float(scale)
    return max(1.0, scale / _u(rng, (0.6, 1.4)))


def sample_stages(rng: np.random.Generator, scale: int, severity: str) -> list[Stage]:
    """One chain of stages for `severity` (a key of PROFILES) and total shrink `scale`."""
    prof = PROFILES[severity]
    second = bool(rng.random() < prof.second_order_p)
    stages = sample_marks(rng, scale, prof.archive)
    if rng.random() < prof.blur_p:
        stages.append(sample_blur(rng, prof.blur_sigma))
    first = _first_order_factor(rng, scale, second)
    stages.append(Resize(first, _interp(rng)))
    stages += sample_tone(rng, prof.archive)
    if rng.random() < prof.noise_p:
        stages.append(sample_noise(rng, prof.noise_std))
    if rng.random() < prof.compress_p:
        stages.append(sample_compression(rng, prof.jpeg_quality, 0.0 if second else 0.1))
    if second:
        stages += _second_order(rng, scale / first, prof)
    if rng.random() < min(1.0, ARCHIVE_P["interlace"] * prof.archive):
        _insert_before_compression(stages, Interlace(_u(rng, (0.5, 3.0)), _u(rng, (0.95, 1.05))))
    return stages


def _second_order(rng: np.random.Generator, factor: float, prof: Profile) -> list[Stage]:
    """Blur (at the intermediate size), resize to the output size, weaker noise, compression."""
    stages: list[Stage] = []
    if rng.random() < 0.6:
        stages.append(sample_blur(rng, (0.2, 1.0)))
    stages.append(Resize(factor, _interp(rng)))
    if rng.random() < 0.6:
        stages.append(sample_noise(rng, (prof.noise_std[0] / 2, prof.noise_std[1] / 2)))
    if rng.random() < 0.8:
        stages.append(sample_compression(rng, prof.jpeg_quality, 0.2))
    return stages


def _insert_before_compression(stages: list[Stage], stage: Stage) -> None:
    if stages and isinstance(stages[-1], (JpegCompression, VideoCodec)):
        stages.insert(len(stages) - 1, stage)
    else:
        stages.append(stage)


def draw_severity(rng: np.random.Generator) -> str:
    names = list(SEVERITY_SHARES)
    return names[int(rng.choice(len(names), p=list(SEVERITY_SHARES.values())))]
