"""Tiny training configs shared by the test_training_* files (seconds per step on 2 CPU cores)."""
from __future__ import annotations

from mixformer_ros.training.config import load_config

TINY_NETWORK = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2.0,
                "template_size": 32, "search_size": 64, "patch_size": 16, "num_bins": 16}


def tiny_config(tmp_path, stage: str = "train", **overrides):
    """A synthetic-data config for the tiny network; `overrides` are dotted keys (a.b=value)."""
    values = {
        "stage": stage,
        "output_dir": str(tmp_path / "run"),
        "model.network": dict(TINY_NETWORK),
        "data.synthetic": {"num_sequences": 16, "num_frames": 12, "frame_size": [96, 80],
                           "min_object_size": 12, "max_object_size": 24, "seed": 3},
        "data.samples_per_epoch": 32,
        "data.num_workers": 0,
        "data.crop": {"template_size": 32, "search_size": 64},
        "optim.batch_size": 4,
        "optim.epochs": 1,
        "optim.lr": 1e-3,
        "log_every": 1,
        "checkpoint_every": 1000,
        "tensorboard": False,
    }
    values.update(overrides)
    return load_config(None, values)
