"""`Degradation`: a frozen, seeded chain of stages that shrinks an image by `scale`.

The same Degradation applied to the same image always gives the same output: stage i draws its
randomness from `np.random.default_rng((seed, i))`. Applied to different images (a face crop and a
natural patch) it is the *same* degradation: same parameters, same kinds of noise, fresh
realisations sized to each image.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ._image import as_hwc, clip01
from .params import params_vector
from .resample import Resize, size_for
from .sampling import PROFILES, draw_severity, sample_stages
from .stages import Stage, stage_from_dict

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Degradation:
    """A chain of stage values, the total shrink `scale` (product of its Resize factors; the last
    resize lands exactly on floor(H / scale) x floor(W / scale)) and the noise `seed`."""

    stages: tuple[Stage, ...]
    scale: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.scale, numbers.Integral) or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "scale", int(self.scale))  # plain ints for JSON
        object.__setattr__(self, "seed", int(self.seed))
        shrink = math.prod(s.factor for s in self.stages if isinstance(s, Resize))
        if abs(shrink - self.scale) > 1e-6 * self.scale:
            raise ValueError(f"the resize stages shrink by {shrink:.6g} in total, but scale is {self.scale}")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def sample(cls, rng: np.random.Generator, scale: int = 4, severity: str | None = None) -> Degradation:
        """Draw a degradation from the training distribution (see `sampling.py`).

        `severity` forces "light", "medium" or "heavy"; by default it is drawn (20/65/15 %).
        """
        if severity is None:
            severity = draw_severity(rng)
        elif severity not in PROFILES:
            raise ValueError(f"unknown severity {severity!r}; use one of {sorted(PROFILES)}")
        stages = sample_stages(rng, scale, severity)
        return cls(tuple(stages), scale, int(rng.integers(0, 2**31 - 1)))

    @classmethod
    def identity(cls, scale: int = 4) -> Degradation:
        """Only the bicubic shrink by `scale` (nothing at all for scale 1)."""
        return cls((Resize(float(scale), "bicubic"),) if scale > 1 else (), scale, 0)

    # -- use -----------------------------------------------------------------------------------
    def apply(self, image: np.ndarray) -> np.ndarray:
        """Degrade an H x W (x 1 or 3) float image in [0, 1]; returns float32 in [0, 1] of shape
        (H // scale, W // scale[, C]) with the input's channel layout. The input is not modified."""
        img, was_2d = as_hwc(image)
        h, w = img.shape[:2]
        target = (h // self.scale, w // self.scale)
        if min(target) < 1:
            raise InputError(f"image of {h}x{w} px is smaller than the scale factor {self.scale}")
        resizes = [i for i, s in enumerate(self.stages) if isinstance(s, Resize)]
        shrink = 1.0
        for i, stage in enumerate(self.stages):
            if isinstance(stage, Resize):
                shrink *= stage.factor
                size = target if i == resizes[-1] else size_for(h, w, shrink)
                img = stage.resize_to(img, size)
            else:
                img = stage.apply(img, np.random.default_rng((self.seed, i)))
        img = clip01(np.ascontiguousarray(img, dtype=np.float32))
        return img[:, :, 0] if was_2d else img

    def params_vector(self) -> np.ndarray:
        """float32 (PARAM_DIM,) summary of the chain's effective damage; see `params.py`."""
        return params_vector(self.stages, self.scale)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; `Degradation.from_dict` restores an identical value."""
        return {"version": FORMAT_VERSION, "scale": self.scale, "seed": self.seed,
                "stages": [stage.to_dict() for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Degradation:
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported degradation format version {data.get('version')!r}")
        stages = tuple(stage_from_dict(d) for d in data["stages"])
        return cls(stages, int(data["scale"]), int(data["seed"]))
