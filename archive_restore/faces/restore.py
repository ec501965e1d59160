"""The face restorers: GFPGAN (v1.4, else v1.3) through spandrel, on aligned 512x512 faces; and our own
(``OwnFaceRestorer``: ``nets.face_net.FaceNet``, trained by ``train faces``), for where GFPGAN's file cannot be had.

spandrel recognises GFPGAN from the state-dict keys of the official file (``{'params_ema': ...}``)
and builds its ``GFPGANv1Clean``. It reads ``.pth`` files with ``torch.load`` and a restricted
unpickler that only admits ordered dicts and tensor storages, so loading never runs code from the
file. The network is called directly, as the official inference does: input scaled to [-1, 1],
output back to [0, 1], with the model's fixed noise buffers (``randomize_noise=False``) so that the
same face always gives the same result.

``fidelity`` blends the result with a reference face: 0 keeps GFPGAN's face, 1 the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, UsageError
from ..nets.face_net import FACE_NET_SIZE
from ..weights.downloads import MANIFEST, locate

FACE_SIZE = 512
GFPGAN_MODELS = ("gfpgan-v1.4", "gfpgan-v1.3")  # preference order
CHOICES = ("auto", "gfpgan", "none")


@dataclass
class FaceRestorer:
    """A loaded GFPGAN on one device; ``restore`` takes batches of aligned faces (``_run``: one batch through
    the network, which ``OwnFaceRestorer`` replaces)."""

    model: torch.nn.Module
    path: Path
    device: torch.device
    batch: int = 4

    @property
    def name(self) -> str:
        return self.path.stem

    @torch.inference_mode()
    def restore(self, faces: np.ndarray | Sequence[np.ndarray], fidelity: float = 0.0) -> np.ndarray:
        """Restored faces, N x 512 x 512 x 3 float32 in [0, 1], from N aligned RGB faces (float [0, 1],
        any square size: resized to 512), blended with the input faces by ``fidelity``."""
        faces = np.stack([np.asarray(f, np.float32) for f in faces]) if len(faces) else np.zeros((0, 1, 1, 3))
        out = [self._run(faces[i : i + self.batch]) for i in range(0, len(faces), self.batch)]
        restored = np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.float32)
        if fidelity:
            restored = blend(restored, _resize_faces(faces), fidelity)
        return restored

    def _run(self, faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(_resize_faces(faces)).permute(0, 3, 1, 2).contiguous().to(self.device)
        y, _ = self.model(x * 2 - 1, return_rgb=False, randomize_noise=False)
        return ((y.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class OwnFaceRestorer(FaceRestorer):
    """Our face restorer (``FaceNet``) on one device, with GFPGAN's ``restore``: the aligned faces are read at the
    network's 128 px (area-averaged) and its faces brought back to 512 (bicubic). Faithful, not generative: it
    sharpens and cleans what the face shows, and invents no texture. The network sees each face and its mirror
    image, and the two results are averaged (a self-ensemble: ``bench faces`` +0.07 dB at x4)."""

    batch: int = 8

    def _run(self, faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(faces, np.float32)).permute(0, 3, 1, 2).to(self.device)
        x = F.interpolate(x, size=(FACE_NET_SIZE, FACE_NET_SIZE), mode="area")
        y = (self.model(x).float() + self.model(x.flip(3)).float().flip(3)) / 2
        y = F.interpolate(y.clamp(0, 1), size=(FACE_SIZE, FACE_SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
        return y.permute(0, 2, 3, 1).cpu().numpy()


def load_own_face_restorer(dirs: Sequence[str | Path] = (), device: str | torch.device = "cpu") -> OwnFaceRestorer:
    """Our face restorer from the models folders (``face_net.safetensors``); ModelNotFoundError saying how to
    train it when it is in none."""
    from ..nets import load_checkpoint
    from ..weights.folders import find_model

    path = find_model("face_net", dirs)
    device = torch.device(device)
    return OwnFaceRestorer(load_checkpoint(path, device, expect="FaceNet").model, path, device)


def blend(restored: np.ndarray, reference: np.ndarray, fidelity: float) -> np.ndarray:
    """``(1 - fidelity) * restored + fidelity * reference``; fidelity in [0, 1]."""
    if not 0.0 <= fidelity <= 1.0:
        raise UsageError(f"face fidelity must be between 0 and 1; got {fidelity}")
    return ((1.0 - fidelity) * restored + fidelity * reference).astype(np.float32)


def _resize_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    if faces.shape[1:3] == (FACE_SIZE, FACE_SIZE):
        return faces
    t = torch.from_numpy(faces).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(FACE_SIZE, FACE_SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    return t.permute(0, 2, 3, 1).numpy()


def find_gfpgan(models_dirs: Sequence[str | Path] = ()) -> Path | None:
    """GFPGANv1.4.pth, else GFPGANv1.3.pth, in the models search order; None when neither is there."""
    for name in GFPGAN_MODELS:
        found = locate(MANIFEST[name], models_dirs)
        if found:
            return found[0]
    return None


def load_face_restorer(path: Path, device: str | torch.device = "cpu", batch: int = 4) -> FaceRestorer:
    """GFPGAN from ``path`` through spandrel, in eval mode on ``device``; a CheckpointError naming
    what was found when the file is unreadable or is not a GFPGAN."""
    from spandrel import ModelLoader, UnsupportedModelError

    device = torch.device(device)
    try:
        descriptor = ModelLoader(device).load_from_file(path)
    except UnsupportedModelError as exc:
        raise CheckpointError(f"{path} is not a model spandrel recognises (expected GFPGAN): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - torch/pickle raise many types for a bad or hostile file
        raise CheckpointError(f"cannot read {path} as a GFPGAN state dict: {type(exc).__name__}: {exc}") from exc
    if descriptor.architecture.id != "GFPGAN":
        raise CheckpointError(f"{path} holds a {descriptor.architecture.id} model, not GFPGAN")
    model = descriptor.model.to(device).eval().requires_grad_(False)
    return FaceRestorer(model, Path(path), device, batch)


def missing_notice(ours: bool = False) -> str:
    """What to say, once per job, when no GFPGAN file is present (``ours``: our face restorer stands in)."""
    v14 = MANIFEST["gfpgan-v1.4"]
    instead = ("faces are restored by our own small face restorer (faithful: it invents no detail)" if ours
               else "faces are not restored separately")
    return (
        f"{'no GFPGAN' if ours else 'no face restorer'}: {v14.filename} (or {MANIFEST['gfpgan-v1.3'].filename}) is in no models folder, so "
        f"face codes come from the blind encoder and {instead}. Get it with "
        f"`archive-restore models fetch {v14.name}` (or put the file in a --models-dir folder)."
    )
