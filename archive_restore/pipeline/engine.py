"""The restoration engine shared by photos and video: faces -> codes -> CondSR, on one device.

Networks and the face detector are loaded once per engine. Without a face restorer, a face's code
comes from BlindDegEncoder on the aligned LQ face; the engine says which source each code has.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..codes import blind_code, image_to_tensor, robust_mean, tensor_to_image
from ..device import resolve_device
from ..faces import align_face, make_detector
from ..models import find_model
from ..nets import load_checkpoint, restore_at_scale
from .tiles import run_tiled

ALIGNED_SIZE = 512


@dataclass(frozen=True)
class FaceCodes:
    """Codes of the usable faces of one image, with their weights (face size x detector score)."""

    codes: np.ndarray    # (N, D)
    weights: np.ndarray  # (N,)
    detector: str

    @property
    def count(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class EngineOptions:
    scale: int = 4
    device: str = "auto"
    face_detector: str = "auto"
    models_dirs: Sequence[Path] = ()
    tile: int = 256
    min_face: int = 16  # faces smaller than this many LQ pixels carry too little to read a code from


class Engine:
    def __init__(self, options: EngineOptions):
        self.options = options
        self.device = resolve_device(options.device)
        dirs = list(options.models_dirs)
        self.sr = load_checkpoint(find_model("condsr_compact", dirs), self.device, expect="CondSR").model
        self.blind = load_checkpoint(find_model("blind_encoder", dirs), self.device, expect="BlindDegEncoder").model
        self.detector = make_detector(options.face_detector, [str(d) for d in _detector_dirs(dirs)], str(self.device))

    @property
    def code_dim(self) -> int:
        return self.sr.code_dim

    def face_codes(self, rgb: np.ndarray) -> FaceCodes:
        """Detect, align and encode every usable face of an RGB float image."""
        faces = [f for f in self.detector.detect(rgb) if min(f.width, f.height) >= self.options.min_face]
        if not faces:
            return FaceCodes(np.zeros((0, self.code_dim), np.float32), np.zeros(0, np.float32), self.detector.name)
        crops = torch.cat([image_to_tensor(align_face(rgb, f, ALIGNED_SIZE).crop) for f in faces]).to(self.device)
        with torch.inference_mode():
            codes = self.blind(crops).float().cpu().numpy()
        weights = np.array([np.sqrt(f.width * f.height) * f.score for f in faces], np.float32)
        return FaceCodes(codes, weights, self.detector.name)

    def image_blind_code(self, rgb: np.ndarray) -> np.ndarray:
        """A code from the LQ image alone (no face to read one from)."""
        return blind_code(self.blind, image_to_tensor(rgb, self.device)).float().cpu().numpy()[0]

    def restore(self, rgb: np.ndarray, code: np.ndarray) -> np.ndarray:
        """CondSR(image, code) in overlapping tiles, at the engine's output scale."""
        z = torch.from_numpy(np.asarray(code, np.float32))[None].to(self.device)
        lq = image_to_tensor(rgb, self.device)

        def fn(tile: torch.Tensor) -> torch.Tensor:
            return restore_at_scale(self.sr, tile, z, self.options.scale).clamp(0, 1)

        with torch.inference_mode():
            return tensor_to_image(run_tiled(fn, lq, self.options.scale, self.options.tile))


def combine(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Robust weighted mean of codes (N x D) -> D."""
    w = None if weights is None else torch.from_numpy(np.asarray(weights, np.float32))
    return robust_mean(torch.from_numpy(np.asarray(codes, np.float32)), w).numpy()[0]


def _detector_dirs(models_dirs: list[Path]) -> list[Path]:
    from ..models import models_dirs as search_order

    return search_order(models_dirs)
