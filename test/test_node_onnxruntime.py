"""The node's backend and precision parameters through ROS: onnxruntime exports the checkpoint (or
reuses the cached export) and still gives the official tracker fixture's boxes; torch in bf16
stays within a fraction of a pixel of them."""

from __future__ import annotations

import pytest

from node_harness import assert_matches_fixture_run, track_fixture_video
from parity import load_npz, write_fixture_checkpoint

FIXTURE_SETTINGS = {"search_factor": 4.4, "update_interval": 200}


@pytest.mark.timeout(400)
def test_onnxruntime_backend_matches_the_fixture(tmp_path):
    checkpoint = tmp_path / "fixture_S.pth.tar"
    write_fixture_checkpoint("S", checkpoint)
    params = {"checkpoint": str(checkpoint), "backend": "onnxruntime", **FIXTURE_SETTINGS}
    video, expected = load_npz("video.npz"), load_npz("tracker_S.npz")
    detections, statuses = track_fixture_video(48, params, tmp_path, video)
    assert_matches_fixture_run(detections, expected, len(video["frames_bgr"]))
    assert (statuses[-1].backend, statuses[-1].precision) == ("onnxruntime", "fp32")


@pytest.mark.timeout(240)
def test_torch_bf16_precision_tracks_within_a_pixel_of_the_fixture(tmp_path):
    checkpoint = tmp_path / "fixture_S.pth.tar"
    write_fixture_checkpoint("S", checkpoint)
    params = {"checkpoint": str(checkpoint), "backend": "torch", "precision": "bf16", **FIXTURE_SETTINGS}
    video, expected = load_npz("video.npz"), load_npz("tracker_S.npz")
    detections, statuses = track_fixture_video(49, params, tmp_path, video)
    assert (statuses[-1].backend, statuses[-1].precision) == ("torch", "bf16")
    # bf16 moves the boxes by up to 0.1 px on this video (test_backends_torch.py); the scores by ~1e-3.
    assert_matches_fixture_run(detections, expected, len(video["frames_bgr"]), box_atol=1.0, score_atol=2e-2)
