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
