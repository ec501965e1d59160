"""``archive-restore bench steady``: how much a still face flickers in the restored video.

A synthetic clip: one still face photo, a new draw of Gaussian noise on every frame (as film grain or
sensor noise). Every frame goes through the video render's face path (``Engine.paste_faces``:
detection, alignment, the face restorer, colour matching, paste-back) once frame by frame and once
steadied along the face's track (``faces.steady.SteadyFaces``, as the video job renders). The figure
is the mean absolute frame-to-frame difference inside the pasted face (the face oval of the clean
photo), in [0, 1] units; the clip's own figure is given for reference.

Without a face restorer (or with ``restorer="identity"``) the aligned LQ face stands in for the
restored one: that measures the steadiness of the crop, the mask and the blend, not a network's own
flicker.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..faces import align_face, feather_mask, paste_back
from ..faces.restore import FaceRestorer
from ..faces.steady import SteadyFaces
from ..pipeline.engine import Engine

RESTORERS = ("auto", "identity")


class IdentityFace(torch.nn.Module):
    """GFPGAN's calling convention, returning the face it is given."""

    def forward(self, x: torch.Tensor, return_rgb: bool = False, randomize_noise: bool = False):
        return x, []


@dataclass(frozen=True)
class SteadyResult:
    clip: float    # the noisy clip's own frame-to-frame difference in the face region
    raw: float     # the pasted face, frame by frame
    steady: float  # the pasted face, steadied along its track
    frames: int
    restorer: str

    def lines(self) -> list[str]:
        return [f"still face, {self.frames} frames, face restorer: {self.restorer}",
                "mean |frame-to-frame difference| in the pasted face (0..1):",
                f"  input clip        {self.clip:.4f}",
                f"  pasted, per frame {self.raw:.4f}",
                f"  pasted, steadied  {self.steady:.4f}  ({self.steady / max(self.raw, 1e-12):.0%} of per frame)"]


def still_face_clip(face: np.ndarray, frames: int, noise: float, seed: int) -> list[np.ndarray]:
    """``frames`` copies of a float RGB photo, each with its own Gaussian noise (std ``noise``)."""
    rng = np.random.default_rng(seed)
    return [np.clip(face + rng.normal(0.0, noise, face.shape), 0, 1).astype(np.float32) for _ in range(frames)]


def face_region(engine: Engine, face: np.ndarray) -> np.ndarray:
    """Where the face oval of the clean photo lands (boolean HxW at the engine's scale)."""
    found = engine.detect_faces(face)
    if not found:
        raise DataError(f"the {engine.detector.name} detector finds no face in the still photo; try another "
                        "--image or --face-detector")
    aligned = align_face(face, max(found, key=lambda f: f.width * f.height), 512)
    size = (face.shape[0] * engine.options.scale, face.shape[1] * engine.options.scale, 3)
    ones = np.ones((512, 512, 3), np.float32)
    return paste_back(np.zeros(size, np.float32), ones, aligned, feather_mask(512, "ellipse"),
                      engine.options.scale)[:, :, 0] > 0.5


def flicker(frames: list[np.ndarray], region: np.ndarray) -> float:
    """Mean absolute change between consecutive frames inside ``region``."""
    return float(np.mean([np.abs(b - a)[region].mean() for a, b in zip(frames, frames[1:])]))


def measure(engine: Engine, face: np.ndarray, frames: int = 16, noise: float = 0.03, seed: int = 0,
            restorer: str = "auto") -> SteadyResult:
    """The flicker of a still ``face`` photo's pasted face, frame by frame and steadied (see above)."""
    if restorer not in RESTORERS:
        raise UsageError(f"unknown restorer {restorer!r}; choose one of {', '.join(RESTORERS)}")
    if frames < 2:
        raise UsageError("the steadiness benchmark needs at least 2 frames")
    if restorer == "identity" or engine.restorer is None:
        engine.restorer = FaceRestorer(IdentityFace(), Path("identity (the aligned LQ face)"), engine.device)
    face = np.asarray(face, np.float32)
    region = face_region(engine, face)
    clip = still_face_clip(face, frames, noise, seed)

    def render(steady: SteadyFaces | None) -> list[np.ndarray]:
        return [engine.paste_faces(f, _upscale(f, engine.options.scale), steady=steady)[0] for f in clip]

    small = region if engine.options.scale == 1 else _downscale_mask(region, engine.options.scale)
    return SteadyResult(flicker(clip, small), flicker(render(None), region), flicker(render(SteadyFaces()), region),
                        frames, engine.restorer.name)


def default_face(width: int = 160) -> np.ndarray:
    """scikit-image's astronaut, ``width`` px wide (160: a face of about 30 px), float RGB."""
    try:
        from skimage import data
    except ImportError as exc:
        raise DataError("the default still face is scikit-image's astronaut; install scikit-image or pass "
                        "--image FACE_PHOTO") from exc
    return resize_width(data.astronaut(), width)


def read_face(path: Path, width: int) -> np.ndarray:
    """A photo from a file, RGB, ``width`` px wide, float."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read {path} as a photo: {exc}") from exc
    return resize_width(rgb, width)


def resize_width(rgb: np.ndarray, width: int) -> np.ndarray:
    import cv2

    height = round(rgb.shape[0] * width / rgb.shape[1])
    small = cv2.resize(np.asarray(rgb), (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / (255.0 if small.dtype == np.uint8 else 1.0)


def _upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    if scale == 1:
        return rgb
    return cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_CUBIC)


def _downscale_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    h, w = mask.shape[0] // scale, mask.shape[1] // scale
    return mask[: h * scale, : w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3)) > 0.5
