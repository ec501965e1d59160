"""The restoration engine shared by photos and video: faces -> codes -> CondSR, on one device.

Networks, the face detector and the face restorer are loaded once per engine. With a face restorer
(GFPGAN, found in the models folders), a face's code is ReDegNet's paired code
``DegEncoder(lq_face, restored_face)`` and restored faces are pasted into the restored picture;
without one, the code comes from BlindDegEncoder on the aligned LQ face, and ``notices`` says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..codes import blind_code, image_to_tensor, paired_code, robust_mean, tensor_to_image
from ..device import resolve_device
from ..errors import ModelNotFoundError, UsageError
from ..faces import AlignedFace, Face, align_face, make_detector
from ..faces.compose import compose_face, is_gray, to_gray
from ..faces.restore import CHOICES, FaceRestorer, find_gfpgan, load_face_restorer, missing_notice
from ..models import find_model, models_dirs
from ..nets import load_checkpoint, restore_at_scale
from .tiles import run_tiled

ALIGNED_SIZE = 512


@dataclass(frozen=True)
class FaceCodes:
    """Codes of the usable faces of one image, with their weights (face size x detector score)."""

    codes: np.ndarray    # (N, D)
    weights: np.ndarray  # (N,)
    detector: str
    source: str = "blind"  # "paired" (DegEncoder with the restored face) or "blind"

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
    face_restorer: str = "auto"  # auto (GFPGAN when its file is present), gfpgan (required), none
    face_fidelity: float = 0.0   # pasted faces: 0 the restored face, 1 the picture's own


class Engine:
    def __init__(self, options: EngineOptions):
        self.options = options
        self.device = resolve_device(options.device)
        dirs = list(options.models_dirs)
        self.sr = load_checkpoint(find_model("condsr_compact", dirs), self.device, expect="CondSR").model
        self.blind = load_checkpoint(find_model("blind_encoder", dirs), self.device, expect="BlindDegEncoder").model
        self.detector = make_detector(options.face_detector, [str(d) for d in models_dirs(dirs)], str(self.device))
        self.notices: list[str] = []
        self.restorer, self.paired = self._load_restorer(dirs)

    def _load_restorer(self, dirs: list[Path]) -> tuple[FaceRestorer | None, torch.nn.Module | None]:
        """GFPGAN and the paired DegEncoder, or (None, None) with a notice when ``auto`` finds no GFPGAN."""
        choice = self.options.face_restorer
        if choice not in CHOICES:
            raise UsageError(f"unknown face restorer {choice!r}; choose one of {', '.join(CHOICES)}")
        path = None if choice == "none" else find_gfpgan(dirs)
        if path is None:
            if choice == "gfpgan":
                raise ModelNotFoundError(missing_notice().replace("no face restorer: ", "--face-restorer gfpgan: ", 1))
            if choice == "auto":
                self.notices.append(missing_notice())
            return None, None
        paired = load_checkpoint(find_model("deg_encoder", dirs), self.device, expect="DegEncoder").model
        return load_face_restorer(path, self.device), paired

    @property
    def code_dim(self) -> int:
        return self.sr.code_dim

    def usable_faces(self, rgb: np.ndarray) -> list[AlignedFace]:
        """The faces of an RGB float image large enough to read, aligned to the 512 template."""
        faces: list[Face] = [f for f in self.detector.detect(rgb) if min(f.width, f.height) >= self.options.min_face]
        return [align_face(rgb, f, ALIGNED_SIZE) for f in faces]

    def face_codes(self, rgb: np.ndarray) -> FaceCodes:
        """Detect, align and encode every usable face of an RGB float image (paired codes when a face
        restorer is loaded, blind codes otherwise)."""
        aligned = self.usable_faces(rgb)
        if not aligned:
            return FaceCodes(np.zeros((0, self.code_dim), np.float32), np.zeros(0, np.float32), self.detector.name)
        codes, source = self.encode_faces([a.crop for a in aligned], is_gray(rgb))
        faces = [a.face for a in aligned]
        weights = np.array([np.sqrt(f.width * f.height) * f.score for f in faces], np.float32)
        return FaceCodes(codes, weights, self.detector.name, source)

    def encode_faces(self, crops: Sequence[np.ndarray], gray: bool = False) -> tuple[np.ndarray, str]:
        """Codes (N x D) of aligned LQ face crops and their source: ``paired`` (DegEncoder with the
        restorer's face) when a face restorer is loaded, else ``blind``."""
        lq = torch.cat([image_to_tensor(c) for c in crops]).to(self.device)
        with torch.inference_mode():
            if self.restorer is None:
                return self.blind(lq).float().cpu().numpy(), "blind"
            hq = torch.from_numpy(self.restored_faces(crops, gray)).permute(0, 3, 1, 2).contiguous()
            return paired_code(self.paired, lq, hq.to(self.device)).float().cpu().numpy(), "paired"

    def restored_faces(self, crops: Sequence[np.ndarray], gray: bool = False) -> np.ndarray:
        """The face restorer's output for aligned face crops (N x 512 x 512 x 3), gray for a gray photo."""
        restored = self.restorer.restore(crops)
        return np.stack([to_gray(f) for f in restored]) if gray else restored

    def paste_faces(self, lq: np.ndarray, picture: np.ndarray) -> tuple[np.ndarray, int]:
        """``picture`` (the restored ``lq``, at the engine's scale) with every usable face of ``lq``
        restored and pasted back, and the number of faces pasted; unchanged without a restorer."""
        if self.restorer is None:
            return picture, 0
        aligned = self.usable_faces(lq)
        if not aligned:
            return picture, 0
        gray = is_gray(lq)
        for face, restored in zip(aligned, self.restored_faces([a.crop for a in aligned], gray)):
            picture = compose_face(picture, restored, face, self.options.scale, self.options.face_fidelity, gray)
        return picture, len(aligned)

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

