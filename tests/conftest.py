"""Shared fixtures. Real data lives in ../shared (beside the project); tests that need it skip when absent."""
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder beside the project); it is absent here")
    return path


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test with a reason."""
    return _require(SHARED / "data")


@pytest.fixture
def shared_weights() -> Path:
    """../shared/weights (two small face detectors), or skip the test with a reason."""
    return _require(SHARED / "weights")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with tiny randomly initialised networks in the shipped file names: the real
    loading code runs, in milliseconds. (Untrained CondSR is bicubic plus a small residual.)"""
    import torch

    from archive_restore.models import MODEL_FILES
    from archive_restore.nets import BlindDegEncoder, CondSR, DegEncoder, DegSynth, save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_checkpoint(DegEncoder(code_dim=16, width=4, input_size=64), folder / MODEL_FILES["deg_encoder"])
    save_checkpoint(BlindDegEncoder(code_dim=16, width=4, input_size=64), folder / MODEL_FILES["blind_encoder"])
    save_checkpoint(DegSynth(code_dim=16, width=4, layers=1), folder / MODEL_FILES["deg_synth"])
    save_checkpoint(CondSR(code_dim=16, width=4, blocks=1), folder / MODEL_FILES["condsr_compact"])
    save_checkpoint(CondSR(code_dim=16, width=4, blocks=1, conditioned=False), folder / MODEL_FILES["condsr_uncond_compact"])
    return folder


@pytest.fixture(scope="module")
def face_rgb() -> np.ndarray:
    """A real face photo (uint8 RGB) small enough to be quick and large enough for Haar (face of ~30 px)."""
    import cv2
    from PIL import Image

    try:
        from skimage import data
        photo, width = data.astronaut(), 160
    except (ImportError, OSError, ValueError):
        path = SHARED / "data" / "real" / "photos" / "gfpgan_whole" / "Blake_Lively.jpg"
        if not path.is_file():
            pytest.skip("needs scikit-image's astronaut or ../shared/data (a real face photo)")
        photo, width = np.asarray(Image.open(path).convert("RGB")), 128
    height = round(photo.shape[0] * width / photo.shape[1])
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
