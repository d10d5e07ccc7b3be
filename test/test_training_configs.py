"""Every shipped training config parses into the config dataclasses (paths aside) and --help works."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mixformer_ros.training.config import TrainConfig, _build
from paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "mixformer_ros" / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_has_only_known_keys(path):
    cfg = _build(TrainConfig, yaml.safe_load(path.read_text()), path.name)
    assert cfg.stage in ("train", "distill", "score")
    assert cfg.data.crop.search_size == cfg.model.network.search_size


def test_cli_help_lists_the_three_stages():
    out = subprocess.run([sys.executable, "-m", "mixformer_ros.training.cli", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for stage in ("train", "distill", "score"):
        assert stage in out.stdout
