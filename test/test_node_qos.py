"""A 640x480 camera in another process reaches the node with its default settings.

The camera here is this test process with Fast DDS defaults; the node runs with no QoS
parameter at all. Both a reliable camera and a sensor-data (best-effort) camera must be
tracked: the node's "auto" QoS follows the publisher, and its Fast DDS profile lets large
best-effort frames through (see docs/node.md).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from node_harness import running_node, image_msg, stamp, wait_until

DOMAIN = 43
pytestmark = pytest.mark.timeout(240)

FRAME = np.random.default_rng(5).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_qos")
    with running_node(DOMAIN, {}, tmp) as (node, client):  # every parameter at its default
        yield node, client


@pytest.mark.parametrize("camera_qos, base", [("reliable", 100), ("sensor_data", 200)])
def test_camera_stream_is_tracked(ros, camera_qos, base):
    node, client = ros
    pub = client.publisher(camera_qos)
    client.wait_for_subscriber(pub, timeout=30)
    count = [1]

    def publish_next():
        pub.publish(image_msg(FRAME, "bgr8", stamp(count[0], base)))
        count[0] += 1

    # Until the node has a frame of this camera (its QoS check runs once a second).
    probe = image_msg(FRAME, "bgr8", stamp(0, base))
    client.ensure_delivery(lambda: pub.publish(probe), stamp(0, base), timeout=30)
    reply = client.init([280, 200, 80, 60], stamp(0, base), label=camera_qos)
    assert reply.success, reply.message
    before = wait_until(
        lambda: [st for st in client.snapshot()[1] if st.track_id == reply.track_id], 10, "status after init"
    )[-1]
    client.clear()

    sent = 45
    for _ in range(sent):  # 3 s of a 15 Hz camera
        publish_next()
        time.sleep(1 / 15)
    wait_until(lambda: client.snapshot()[0], 30, f"detections from a {camera_qos} camera")
    time.sleep(1.0)  # let the last frame finish
    detections, statuses = client.snapshot()
    after = statuses[-1]
    # Every frame that reached the node was either tracked or skipped as stale.
    seen = (after.frames_processed + after.frames_dropped) - (before.frames_processed + before.frames_dropped)
    assert seen >= 0.8 * sent, f"only {seen} of {sent} frames arrived"
    assert {m.id for _, m in detections} == {reply.track_id}
    assert all(m.results[0].hypothesis.class_id == camera_qos for _, m in detections)
    assert client.stop_tracking().success
    client.node.destroy_publisher(pub)
    client._publishers.clear()
