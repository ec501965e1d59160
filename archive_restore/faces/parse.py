"""Face parsing masks for paste-back: which pixels of an aligned restored face are face.

A feathered ellipse pastes some background, hair or collar of the restored crop over the picture
and cuts off part of a long or turned face. A parsing network labels every pixel of the aligned
face with one of the 19 CelebAMask-HQ classes; the paste-back mask keeps skin, brows, eyes,
glasses, ears, nose, mouth and lips and leaves neck, clothes, hair, hat and background to the
restored picture, softened so that no edge shows and faded to 0 at the crop border.

Two facexlib networks read the same classes (architectures from the ``facexlib`` package, MIT; the
weights are facexlib's release files, loaded with ``torch.load(weights_only=True)``):

- BiSeNet (``parsing_bisenet.pth``, ResNet-18 based): about 2 s a face on one core of a shared
  CPU, preferred on the CPU;
- ParseNet (``parsing_parsenet.pth``, what GFPGAN's own helper uses): some 20 times slower on the
  CPU, preferred on a GPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from ..weights.downloads import MANIFEST, locate
from .align import feather_mask

PARSE_SIZE = 512
#: CelebAMask-HQ labels counted as face: 1 skin, 2-3 brows, 4-5 eyes, 6 glasses, 7-8 ears,
#: 9 earrings, 10 nose, 11 mouth, 12-13 lips (0 background, 14 neck, 15 necklace, 16 cloth,
#: 17 hair, 18 hat are not).
FACE_LABELS = tuple(range(1, 14))
MIN_FACE_SHARE = 0.05  # below this share of the crop labelled face, the parse is not trusted


@dataclass(frozen=True)
class _Network:
    name: str          # manifest name
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def build(self) -> torch.nn.Module:
        if self.name == "bisenet":
            from facexlib.parsing.bisenet import BiSeNet

            return BiSeNet(num_class=19)
        from facexlib.parsing.parsenet import ParseNet

        return ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)


NETWORKS = {
    "bisenet": _Network("bisenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "parsenet": _Network("parsenet", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def labels_to_mask(labels: np.ndarray, size: int) -> np.ndarray:
    """A soft ``size`` x ``size`` paste-back mask from a label map: 1 on face labels, softened with
    the ellipse mask's feathering and faded to 0 at the crop border."""
    return _soft_mask(np.isin(labels, FACE_LABELS), size)


def _soft_mask(face: np.ndarray, size: int) -> np.ndarray:
    face = face.astype(np.float32)
    if face.shape != (size, size):
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
    sigma = 0.025 * size
    soft = cv2.GaussianBlur(face, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.clip(soft * feather_mask(size, "rect"), 0.0, 1.0).astype(np.float32)


class FaceParser:
    """A loaded parsing network: aligned faces in, paste-back masks out."""

    def __init__(self, model: torch.nn.Module, network: _Network, path: Path, device: torch.device):
        self.model, self.network, self.path, self.device = model, network, path, device
        self._mean = torch.tensor(network.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(network.std, device=device).view(1, 3, 1, 1)

    @property
    def name(self) -> str:
        return self.network.name

    @torch.inference_mode()
    def labels(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """N x 512 x 512 class labels of aligned RGB faces (float in [0, 1], any square size)."""
        out = []
        for face in faces:
            x = torch.from_numpy(np.ascontiguousarray(face, np.float32)).permute(2, 0, 1)[None].to(self.device)
            if x.shape[-1] != PARSE_SIZE:
                x = F.interpolate(x, size=(PARSE_SIZE, PARSE_SIZE), mode="bilinear", align_corners=False)
            logits = self.model((x - self._mean) / self._std)[0]
            out.append(logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy())
        return np.stack(out)

    def masks(self, faces: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """A paste-back mask per face at the face's own size, or None where too little of the crop
        was labelled face to trust (the caller falls back to the ellipse)."""
        masks = []
        for face, labels in zip(faces, self.labels(faces)):
            is_face = np.isin(labels, FACE_LABELS)
            masks.append(_soft_mask(is_face, face.shape[0]) if is_face.mean() >= MIN_FACE_SHARE else None)
        return masks


def find_parser(models_dirs: Sequence[str | Path] = (), device: str = "cpu") -> tuple[str, Path] | None:
    """(network name, file) of the parsing model to use: BiSeNet first on the CPU, ParseNet first on
    a GPU; None when neither file is in the models search order."""
    order = ["parsenet", "bisenet"] if str(device).startswith("cuda") else ["bisenet", "parsenet"]
    for name in order:
        found = locate(MANIFEST[name], models_dirs)
        if found:
            return name, found[0]
    return None


def load_face_parser(name: str, path: Path, device: str | torch.device = "cpu") -> FaceParser:
    """The facexlib parsing network ``name`` with the state dict in ``path`` (tensors only); a
    CheckpointError naming the file when it cannot be read or does not fit the architecture."""
    network = NETWORKS[name]
    device = torch.device(device)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/pickle raise many types for a bad or hostile file
        raise CheckpointError(f"cannot read {path} as a {name} state dict: {type(exc).__name__}: {exc}") from exc
    model = network.build()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not hold facexlib's {name} weights: {first}") from exc
    return FaceParser(model.to(device).eval().requires_grad_(False), network, Path(path), device)


def missing_notice() -> str:
    """What to say, once per job, when a face restorer is loaded but no parsing model is present."""
    return (
        f"no face parsing model: {MANIFEST['bisenet'].filename} (or {MANIFEST['parsenet'].filename}) is in no "
        f"models folder, so restored faces are pasted through a feathered ellipse. Get it with "
        f"`archive-restore models fetch bisenet` (or put the file in a --models-dir folder)."
    )
