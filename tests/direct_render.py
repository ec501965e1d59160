"""The restoration networks called directly (no job, no engine, no fast forward, no tiles): what a
job's output must equal when it renders a picture with the code it records. The pictures the tests
give are smaller than one tile, so the job runs each network once on the whole picture too."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from archive_restore.media.image import read_image
from archive_restore.weights.folders import MODEL_FILES
from archive_restore.nets import load_checkpoint
from archive_restore.nets.condsr import restore_at_scale
from archive_restore.pipeline.stack import stack_restore

# An 8-bit output is the float picture rounded (at most half a level off), and the job's fast CondSR
# forward is within 1e-5 of CondSR's own (pipeline/forward.py, CPU_TOLERANCE): nothing else may differ.
EIGHT_BIT = 0.5 / 255 + 2e-5


def _net(models: Path, name: str) -> torch.nn.Module:
    return load_checkpoint(models / MODEL_FILES[name]).model.eval()


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(2, 0, 1)[None]


def _code(code) -> torch.Tensor:
    return torch.as_tensor(np.asarray(code, np.float32)).reshape(1, -1)


@torch.inference_mode()
def condsr(models: Path, rgb: np.ndarray, code, scale: int) -> np.ndarray:
    """CondSR(rgb, code) at ``scale`` (area-resampled from its native x4), clamped: HxWx3 float."""
    out = restore_at_scale(_net(models, "condsr_compact"), _tensor(rgb), _code(code), scale).clamp(0, 1)
    return out[0].permute(1, 2, 0).numpy()


@torch.inference_mode()
def stack(models: Path, upscaler, rgb: np.ndarray, code, fidelity: float, scale: int) -> np.ndarray:
    """The stack (Cleanup steered by the code -> ``upscaler`` -> blend towards CondSR by ``fidelity``)."""
    out = stack_restore(_tensor(rgb), _code(code), _net(models, "cleanup_compact"), upscaler,
                        _net(models, "condsr_compact"), fidelity, scale)
    return out[0].permute(1, 2, 0).numpy()


def pixels(path: Path) -> np.ndarray:
    """A picture as the jobs read it: float RGB in [0, 1]."""
    return read_image(path).pixels
