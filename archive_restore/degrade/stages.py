"""The stage protocol: a stage is a small frozen dataclass that knows how to degrade an image.

Every stage kind has a unique `kind` name and registers itself, so a chain of stages can be written
to JSON (`to_dict`) and read back (`stage_from_dict`) without a hand-kept table. Fields are plain
floats, ints, bools, strings or tuples of floats, so the JSON round trip is exact.

`apply(img, rng)` takes a float32 H x W x C image (C = 1 or 3, values in [0, 1]) and a
`np.random.Generator` for whatever randomness the stage realises (noise, speck positions); it
returns a new float32 H x W x C image and never modifies its input. Sizes are in pixels of the image
the stage receives.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

_REGISTRY: dict[str, type[Stage]] = {}


class Stage(ABC):
    """Base class of all stage values (subclasses are `@dataclass(frozen=True)`)."""

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _REGISTRY:
                raise TypeError(f"two stage classes share the kind {cls.kind!r}")
            _REGISTRY[cls.kind] = cls

    @abstractmethod
    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return the degraded image (float32 H x W x C); `img` is left untouched."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: {"kind": ..., field: value, ...}."""
        out: dict[str, Any] = {"kind": self.kind}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


def stage_from_dict(data: dict[str, Any]) -> Stage:
    """Rebuild a stage written by `Stage.to_dict` (lists become tuples again)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in _REGISTRY:
        raise ValueError(f"unknown degradation stage kind {kind!r}; known: {sorted(_REGISTRY)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return _REGISTRY[kind](**kwargs)


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) when a stage parameter is out of range."""
    if not condition:
        raise ValueError(message)
