"""The demo end to end: node process, camera process, annotated video and summary on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from conftest import ros_subprocess_env
from paths import REPO_ROOT

DOMAIN = 46
FRAMES = 20


@pytest.mark.timeout(300)
def test_demo_writes_video_and_summary_and_warns_about_untrained_weights(tmp_path):
    cmd = [
        sys.executable, "-m", "mixformer_ros.demo",
        "--max-frames", str(FRAMES), "--checkpoint", "none", "--output-dir", str(tmp_path),
    ]
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, env=ros_subprocess_env(DOMAIN), capture_output=True, text=True, timeout=280
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out + (tmp_path / "demo_node.log").read_text()
    assert "UNTRAINED random weights" in out

    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["untrained_weights"] is True
    assert summary["frames_published"] == FRAMES
    assert 0 < summary["frames_tracked"] <= FRAMES - 1
    assert summary["frames_tracked"] + summary["frames_dropped_by_node"] == FRAMES - 1
    assert summary["latency_ms_p50"] > 0 and summary["latency_ms_p99"] >= summary["latency_ms_p50"]
    assert 0.0 <= summary["mean_iou"] <= 1.0

    capture = cv2.VideoCapture(summary["video"])
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        count += 1
    capture.release()
    assert count == FRAMES
    assert "UNTRAINED" in (tmp_path / "demo_node.log").read_text()


@pytest.mark.timeout(300)
def test_demo_plays_a_user_video_file(tmp_path):
    from mixformer_ros.demo_clip import ClipConfig, make_clip

    frames, truth = make_clip(ClipConfig(num_frames=12, width=320, height=240, seed=3))
    video = tmp_path / "input.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()

    box = ",".join(str(int(v)) for v in truth[0])
    # Run from the video's folder with relative paths, as scripts/demo.sh does from the user's folder.
    cmd = [
        sys.executable, "-m", "mixformer_ros.demo", "--source", video.name, "--init-box", box,
        "--checkpoint", "none", "--output-dir", "out",
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, env=ros_subprocess_env(DOMAIN), capture_output=True, text=True, timeout=280
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "demo_summary.json").read_text())
    assert summary["source"] == video.name and summary["frames_published"] == 12
    assert summary["publish_fps"] == 10.0  # the file's own rate
    assert summary["mean_iou"] is None  # no ground truth for a user's video
    assert summary["frames_tracked"] > 0


def test_demo_needs_a_valid_init_box_for_a_video(tmp_path):
    def demo(*args):
        return subprocess.run(
            [sys.executable, "-m", "mixformer_ros.demo", "--source", str(tmp_path / "missing.mp4"), *args],
            cwd=REPO_ROOT, env=ros_subprocess_env(DOMAIN), capture_output=True, text=True, timeout=60,
        )

    result = demo()
    assert result.returncode != 0 and "--init-box" in result.stderr
    for bad in ("--init-box=-5,10,20,20", "--init-box=5,10,0,20", "--init-box=5,10,20", "--init-box=nan,10,20,20"):
        result = demo(bad)
        assert result.returncode == 2 and "expected four finite numbers x,y,w,h with x, y >= 0 and w, h > 0" in result.stderr, bad
    for bad, reason in (("--max-frames=0", "must be a whole number > 0"), ("--fps=-5", "must be a finite number >= 0"),
                        ("--fps=inf", "must be a finite number >= 0")):
        result = demo(bad, "--init-box=5,10,20,20")
        assert result.returncode == 2 and reason in result.stderr, bad
