"""backend:=onnxruntime through ROS: the node exports the checkpoint (or reuses the cached export)
and its detections still equal the official tracker fixture."""

from __future__ import annotations

import numpy as np
import pytest

from mixformer_ros.ros.conversions import detection_to_xywh, stamp_to_ns
from node_harness import Client, NodeProcess, image_msg, stamp, wait_until
from parity import load_npz, write_fixture_checkpoint

DOMAIN = 48


@pytest.mark.timeout(400)
def test_onnxruntime_backend_matches_the_fixture(tmp_path):
    checkpoint = tmp_path / "fixture_S.pth.tar"
    write_fixture_checkpoint("S", checkpoint)
    params = {"checkpoint": str(checkpoint), "backend": "onnxruntime", "search_factor": 4.4, "update_interval": 200}
    node = NodeProcess(DOMAIN, params, tmp_path)
    client = Client(DOMAIN)
    video, expected = load_npz("video.npz"), load_npz("tracker_S.npz")
    frames = video["frames_bgr"]
    try:
        client.wait_for_services(timeout=300)  # the first run exports the network to ONNX
        pub = client.publisher()
        client.wait_for_subscriber(pub)
        for i in range(len(frames)):  # all twelve buffered before the box arrives
            pub.publish(image_msg(np.ascontiguousarray(frames[i]), "bgr8", stamp(i)))
        client.ensure_delivery(None, stamp(len(frames) - 1))
        reply = client.init(video["init_box_xywh"], stamp(0))
        assert reply.success, reply.message
        wait_until(lambda: len(client.snapshot()[0]) >= len(frames) - 1, 120, "catch-up detections")
        detections, statuses = client.snapshot()
    finally:
        client.close()
        code = node.stop()
        print(node.log()[-3000:])
    assert code == 0
    by_stamp = {stamp_to_ns(m.header.stamp): m for _, m in detections}
    ordered = [by_stamp[stamp_to_ns(stamp(i))] for i in range(1, len(frames))]
    boxes = np.array([detection_to_xywh(m) for m in ordered])
    scores = np.array([m.results[0].hypothesis.score for m in ordered])
    np.testing.assert_allclose(boxes, expected["real__out_boxes_xywh"][1:], atol=1e-3, rtol=0)
    np.testing.assert_allclose(scores, expected["real__out_scores"][1:], atol=1e-5, rtol=0)
    assert statuses[-1].backend == "onnxruntime"
