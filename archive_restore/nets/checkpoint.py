"""Checkpoints: safetensors weights plus a JSON header from which the network rebuilds itself.

The header (safetensors' string metadata) holds the architecture name, its constructor arguments
and free-form information (scale, code length, training data, steps, metrics). Loading never
unpickles anything: safetensors files carry tensors only.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError
from .cleanup import Cleanup
from .condsr import CondSR
from .defects import DefectNet
from .degnet import BlindDegEncoder, DegEncoder
from .degsynth import DegSynth
from .face_net import FaceNet

FORMAT = "archive-restore/1"
ARCHITECTURES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (DegEncoder, BlindDegEncoder, DegSynth, CondSR, Cleanup, DefectNet, FaceNet)
}


@dataclass
class Checkpoint:
    """A rebuilt network and what its file says about it."""

    model: nn.Module
    arch: str
    args: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(model: nn.Module, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its weights and its ``config``, the constructor arguments) to ``path``
    atomically: a temporary file in the same folder, then a rename."""
    arch = type(model).__name__
    args = model.config
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"cannot save {arch}: not one of {sorted(ARCHITECTURES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "arch": arch,
        "args": json.dumps(args, sort_keys=True),
        "info": json.dumps(info or {}, sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; a model file is shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's header, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has no archive-restore header (format={meta.get('format')!r}, expected {FORMAT!r})")
    return {"arch": meta["arch"], "args": json.loads(meta["args"]), "info": json.loads(meta.get("info", "{}"))}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", expect: str | None = None) -> Checkpoint:
    """Rebuild the network a checkpoint describes and load its weights (strictly)."""
    path = Path(path)
    header = read_header(path)
    arch = header["arch"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path} holds unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    if expect is not None and arch != expect:
        raise CheckpointError(f"{path} holds a {arch}, but a {expect} was expected")
    model = ARCHITECTURES[arch](**header["args"])
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match {arch}({header['args']}): {exc}") from exc
    model.to(device).eval()
    return Checkpoint(model=model, arch=arch, args=header["args"], info=header["info"], path=path)
