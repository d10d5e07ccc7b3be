"""Where the tests find the repository, the venv and the shared read-only data.

The shared folder (fixtures, SOT sequences, OpenCV tracker models) lies beside the clone as
``../shared``, both here and on CI. Only tests and benchmarks read it; the product never does.
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def _shared_dir() -> Path:
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {path}; it must sit beside the repository "
            "(fixtures/, data/sot/, models/), as it does on CI"
        )
    return path


SHARED_DIR = _shared_dir()
FIXTURE_DIR = SHARED_DIR / "fixtures" / "mixformerv2_parity"
SOT_DIR = SHARED_DIR / "data" / "sot"
OPENCV_MODELS_DIR = SHARED_DIR / "models" / "opencv_trackers"
