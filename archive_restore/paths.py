"""Well-known places relative to the repository checkout."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The team's read-only data folder, beside the checkout (training, evaluation, benchmarks).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
