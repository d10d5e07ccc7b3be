"""Fixtures shared by every test file. Keep this small: area-specific fixtures live in their own files."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import paths` from any test file

from paths import REPO_ROOT  # noqa: E402

# DDS discovery stays on this machine (loopback) for every test, in-process nodes included.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def ros_subprocess_env(domain_id: int, **extra: str) -> dict[str, str]:
    """Environment for a ROS subprocess: its own DDS domain and this working tree first on the path.

    Each test file picks domain ids from its helper's assigned range, so concurrent runs of
    different tests never see each other's topics.
    """
    if not 0 <= domain_id <= 101:
        raise ValueError(f"ROS_DOMAIN_ID must be in [0, 101], got {domain_id}")
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def ros_env():
    """Factory fixture: ``ros_env(domain_id, **extra)`` returns a subprocess environment dict."""
    return ros_subprocess_env
