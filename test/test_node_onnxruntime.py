"""backend:=onnxruntime through ROS: the node exports the checkpoint (or reuses the cached export)
and its detections still equal the official tracker fixture."""

from __future__ import annotations

import numpy as np
import pytest

from node_harness import Client, NodeProcess, assert_matches_fixture_run, image_msg, stamp, wait_until
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
    assert_matches_fixture_run(detections, expected, len(frames))
    assert statuses[-1].backend == "onnxruntime"
