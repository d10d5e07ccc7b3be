"""The PyTorch backend: its CPU fast path (a bf16 backbone, oneDNN, AMX where present) stays close to the fp32
fixture run, and its start-up warm-up pass leaves no state behind."""
import numpy as np
import pytest
import torch

from parity import fixture_state_dict, load_npz, video_rgb
from mixformer_ros.backends import create_backend
from mixformer_ros.model import build_mixformerv2
from mixformer_ros.tracking import build_tracker


def test_bf16_on_cpu_tracks_within_a_pixel_of_fp32():
    ref = load_npz("tracker_S.npz")["real__out_boxes_xywh"]
    trk = build_tracker(state_dict=fixture_state_dict("S"), backend="torch", precision="bf16")
    assert trk.backend.precision == "bf16" and trk.backend.device == "cpu"
    frames, init_box = video_rgb()
    trk.initialize(frames[0], init_box)
    boxes = np.array([init_box] + [trk.track(f).box for f in frames[1:]])
    assert np.all(np.isfinite(boxes))
    np.testing.assert_allclose(boxes, ref, rtol=0, atol=1.0)  # measured: <= 0.2 px on this video


def test_bf16_backbone_with_fp32_heads_leaves_the_callers_network_alone():
    net = build_mixformerv2("S")
    backend = create_backend("torch", net, precision="bf16")
    assert {p.dtype for p in backend.model.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in backend.model.box_head.parameters()} == {torch.float32}
    assert {p.dtype for p in net.parameters()} == {torch.float32}  # a copy was converted, not the caller's


def test_torch_backend_rejects_unknown_precision_and_onnx_options():
    net = build_mixformerv2("S")
    with pytest.raises(ValueError, match="unknown precision"):
        create_backend("torch", net, precision="int8")
    with pytest.raises(ValueError, match="do not apply"):
        create_backend("torch", net, onnx_model="x")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("tensorflow", net)


def test_warm_up_pass_leaves_no_templates_behind():
    net = build_mixformerv2("S")
    backend = create_backend("torch", net)  # runs the network once on blank crops
    search = np.zeros((net.config.search_size, net.config.search_size, 3), np.uint8)
    with pytest.raises(RuntimeError, match="before set_templates"):
        backend.predict(search)
