"""compressed:=true: JPEG and PNG frames are tracked; corrupt data is rejected with a reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from mixformer_ros.msg import TrackerStatus
from node_harness import running_node, compressed_msg, png_declaring, stamp, wait_until

DOMAIN = 47
pytestmark = pytest.mark.timeout(240)

SCENE = np.random.default_rng(11).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)


def _encoded(ext: str) -> bytes:
    ok, data = cv2.imencode(ext, SCENE)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_compressed")
    with running_node(DOMAIN, {"compressed": True, "num_threads": 1}, tmp, remap={"image/compressed": "/cam/image_raw/compressed"}) as (node, client):
        yield node, client


def test_jpeg_and_png_are_tracked_and_corrupt_data_is_rejected(ros):
    node, client = ros
    pub = client.node.create_publisher(CompressedImage, "/cam/image_raw/compressed", 10)
    client.wait_for_subscriber(pub)
    jpeg, png = _encoded(".jpg"), _encoded(".png")
    client.ensure_delivery(lambda: pub.publish(compressed_msg(jpeg, stamp(0), "bgr8; jpeg compressed bgr8")), stamp(0))
    reply = client.init([100, 80, 60, 40], stamp(0), label="jpeg")
    assert reply.success, reply.message

    client.clear()
    pub.publish(compressed_msg(png, stamp(1), "bgr8; png compressed bgr8"))
    det = wait_until(lambda: client.snapshot()[0], 30, "detection of a PNG frame")[-1][1]
    assert det.id == reply.track_id and det.header.frame_id == "camera_optical"

    client.clear()
    pub.publish(compressed_msg(jpeg[: len(jpeg) // 3] + b"\x00" * 64, stamp(2), "jpeg"))
    pub.publish(compressed_msg(b"not an image at all", stamp(3), "jpeg"))
    pub.publish(compressed_msg(png_declaring(50_000, 50_000), stamp(4), "png"))
    def rejections():
        return [s for s in client.snapshot()[1] if "rejected" in s.message]

    wait_until(lambda: len(rejections()) >= 3, 30, "rejection of the three corrupt frames")
    rejected = rejections()
    assert all("could not decode" in s.message for s in rejected)
    assert rejected[-1].track_id == reply.track_id and rejected[-1].state != TrackerStatus.IDLE

    client.clear()
    pub.publish(compressed_msg(jpeg, stamp(5), ""))  # empty format: decoded from the data
    det = wait_until(lambda: client.snapshot()[0], 30, "detection after corrupt frames")[-1][1]
    assert det.id == reply.track_id
    assert node.alive()
