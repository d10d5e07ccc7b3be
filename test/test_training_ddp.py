"""DDP with two CPU processes (torchrun, gloo) gives the same weights, and counts the same unreadable
frames, as one process on the same global batch."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from mixformer_ros.model import read_checkpoint
from paths import REPO_ROOT
from training_helpers import TINY_NETWORK


def _otb_with_unreadable_frames(root):
    """One OTB-style sequence of 10 noise frames, 3 of them not images."""
    img = root / "Noisy" / "img"
    img.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 11):
        cv2.imwrite(str(img / f"{i:04d}.jpg"), rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    for i in (3, 6, 9):
        (img / f"{i:04d}.jpg").write_bytes(b"not a jpeg")
    (root / "Noisy" / "groundtruth_rect.txt").write_text("".join(f"{30 + i},{20 + i},24,20\n" for i in range(10)))
    return root


def _config(tmp_path, name: str, batch_size: int, epochs: int = 1) -> str:
    cfg = {
        "stage": "train", "seed": 5, "output_dir": str(tmp_path / name),
        "model": {"network": TINY_NETWORK},
        "data": {"datasets": [{"type": "otb", "root": str(tmp_path / "otb")}],
                 "synthetic": {"num_sequences": 8, "num_frames": 10, "frame_size": [96, 80],
                               "min_object_size": 12, "max_object_size": 24, "seed": 4},
                 "samples_per_epoch": 16, "num_workers": 0,
                 "crop": {"template_size": 32, "search_size": 64}},
        "optim": {"epochs": epochs, "batch_size": batch_size, "lr": 1.0e-3},
        "tensorboard": False, "log_every": 1,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")


def _run(args: list[str]) -> None:
    env = _env()
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_process_ddp_matches_one_process(tmp_path):
    _otb_with_unreadable_frames(tmp_path / "otb")
    _run(["-m", "mixformer_ros.training.cli", "train", "--device", "cpu", "--threads", "1",
          "--config", _config(tmp_path, "single", batch_size=4)])
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "mixformer_ros.training.cli", "train", "--device", "cpu", "--threads", "1",
          "--config", _config(tmp_path, "ddp", batch_size=2)])
    single, _, extra_single = read_checkpoint(tmp_path / "single" / "model.pth.tar")
    ddp, _, extra_ddp = read_checkpoint(tmp_path / "ddp" / "model.pth.tar")
    assert extra_single["global_step"] == extra_ddp["global_step"] == 4
    assert extra_single["skipped_frames"] == extra_ddp["skipped_frames"] > 0
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-5), k


def _worker_pid(marker: str, rank: int) -> int | None:
    """PID of the torchrun worker with this RANK whose environment carries ``marker``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in item)
        except OSError:  # gone, or not ours to read
            continue
        if env.get("MIXFORMER_TEST_RUN") == marker and env.get("RANK") == str(rank):
            return int(proc.name)
    return None


def test_ctrl_c_reaching_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """A terminal's Ctrl-C (or a scheduler's SIGTERM) reaches the ranks at different moments; here
    only rank 1 gets it. Every rank must stop after the same step, with a resumable checkpoint of
    it, rather than rank 0 going on into an all-reduce its peer never joins."""
    _otb_with_unreadable_frames(tmp_path / "otb")
    out = tmp_path / "ddp"
    marker = str(tmp_path)
    log = (tmp_path / "torchrun.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "mixformer_ros.training.cli", "train", "--device", "cpu", "--threads", "1",
                             "--config", _config(tmp_path, "ddp", batch_size=2, epochs=500)],
                            cwd=REPO_ROOT, env=dict(_env(), MIXFORMER_TEST_RUN=marker), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "torchrun.log").read_text()
            time.sleep(0.2)
        os.kill(_worker_pid(marker, rank=1), signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "torchrun.log").read_text()
    stopped_at = [int(step) for step in re.findall(r"interrupted at step (\d+)", text)]
    assert len(stopped_at) == 2 and stopped_at[0] == stopped_at[1], text[-3000:]
    _, _, extra = read_checkpoint(out / "checkpoints" / "last.pth.tar")
    assert extra["global_step"] == stopped_at[0] < 500 * 4, text[-3000:]
