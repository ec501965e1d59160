"""Where the project's own networks live and how they are found.

Our trained weights ship in the repository's ``models/`` folder (safetensors with a JSON header);
``--models-dir`` and ``ARCHIVE_RESTORE_MODELS`` put other folders first.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import ModelNotFoundError
from ..paths import REPO_ROOT

MODEL_FILES = {
    "deg_encoder": "deg_encoder.safetensors",
    "deg_synth": "deg_synth.safetensors",
    "blind_encoder": "blind_encoder.safetensors",
    "condsr_compact": "condsr_compact.safetensors",
    "condsr_uncond_compact": "condsr_uncond_compact.safetensors",
    "condsr_large": "condsr_large.safetensors",
    "condsr_uncond_large": "condsr_uncond_large.safetensors",
    "cleanup_compact": "cleanup_compact.safetensors",
    "cleanup_large": "cleanup_large.safetensors",
    "defects": "defects.safetensors",
    "face_net": "face_net.safetensors",
}
REPO_MODELS = REPO_ROOT / "models"
ENV_VAR = "ARCHIVE_RESTORE_MODELS"


def models_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Search order: folders given on the command line, ``$ARCHIVE_RESTORE_MODELS``, the repository's
    ``models/``, the user cache ``~/.cache/archive-restore``."""
    dirs = [Path(d) for d in extra]
    if os.environ.get(ENV_VAR):
        dirs += [Path(p) for p in os.environ[ENV_VAR].split(os.pathsep) if p]
    dirs += [REPO_MODELS, Path.home() / ".cache" / "archive-restore"]
    return dirs


def find_model(key: str, extra: Sequence[str | Path] = ()) -> Path:
    """The first file named for ``key`` in the search order, or a ModelNotFoundError naming the places."""
    name = MODEL_FILES[key]
    dirs = models_dirs(extra)
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise ModelNotFoundError(
        f"model file {name} not found in: {', '.join(str(d) for d in dirs)}. "
        "Train it with `archive-restore train`, or pass --models-dir pointing at a folder that holds it."
    )
