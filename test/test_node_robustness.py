"""Bad input and overload: the node stays up, says why, and keeps the track it had.

One node process (MixFormerV2-S, untrained weights: only the plumbing matters here) serves
every test; the tests run in file order and share its state on purpose.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import serialize_message
from mixformer_ros.msg import TrackerStatus
from node_harness import running_node, image_msg, stamp, wait_until

DOMAIN = 41
pytestmark = pytest.mark.timeout(240)

RNG = np.random.default_rng(3)
SCENE = RNG.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_robustness")
    with running_node(DOMAIN, {"variant": "S", "num_threads": 1, "frame_buffer_size": 10}, tmp) as (node, client):
        yield node, client


def _good(client, index, base=100):
    client.publisher().publish(image_msg(SCENE, "rgb8", stamp(index, base)))


def _last_status(client):
    return wait_until(lambda: client.snapshot()[1], 10, "a status message")[-1]


def test_init_before_any_image_is_refused(ros):
    node, client = ros
    reply = client.init([10, 10, 50, 50])
    assert not reply.success and reply.track_id == ""
    assert "no image received yet" in reply.message


def test_bad_frames_are_rejected_and_tracking_continues(ros):
    node, client = ros
    pub = client.publisher()
    client.wait_for_subscriber(pub)
    client.ensure_delivery(lambda: _good(client, 0), stamp(0, 100))
    track = client.init([100, 80, 60, 40], label="box")
    assert track.success, track.message

    bad = []
    wrong_step = image_msg(SCENE, "rgb8", stamp(1, 100))
    wrong_step.step = 100  # less than 320 * 3
    bad.append((wrong_step, "step 100 is smaller"))
    short = image_msg(SCENE, "rgb8", stamp(2, 100))
    short.height = 300  # data holds 240 rows only
    bad.append((short, "expected step*height"))
    float_depth = image_msg(SCENE[..., 0].astype(np.float32), "32FC1", stamp(3, 100))
    bad.append((float_depth, "unsupported encoding '32FC1'"))
    empty = image_msg(np.zeros((0, 0, 3), np.uint8), "rgb8", stamp(4, 100))
    bad.append((empty, "empty image"))
    # The node reads the serialized bytes itself (raw subscription): a cut-off message must not
    # crash it. rclpy publishes bytes as they are.
    truncated = serialize_message(image_msg(SCENE, "rgb8", stamp(5, 100)))[:1000]
    bad.append((truncated, "malformed message"))

    for i, (msg, reason) in enumerate(bad):
        client.clear()
        pub.publish(msg)
        rejected = wait_until(
            lambda: [s for s in client.snapshot()[1] if "rejected" in s.message], 20, f"rejection: {reason}"
        )
        assert reason in rejected[-1].message
        assert rejected[-1].frames_rejected == i + 1
        assert rejected[-1].track_id == track.track_id and rejected[-1].state != TrackerStatus.IDLE
        # The next good frame is tracked under the same id.
        _good(client, 10 + i)
        det = wait_until(lambda: client.snapshot()[0], 20, "detection after a bad frame")[-1][1]
        assert det.id == track.track_id

    # A readable frame of another size is not tracked (the box is in the first size's pixels) and
    # the status says so; the track waits for frames of its size.
    client.clear()
    client.publisher().publish(image_msg(np.ascontiguousarray(SCENE[::2, ::2]), "rgb8", stamp(15, 100)))
    status = wait_until(lambda: [s for s in client.snapshot()[1] if "not tracked" in s.message], 20,
                        "status of a resized frame")[-1]
    assert "size changed from 320x240 to 160x120" in status.message
    assert status.track_id == track.track_id and status.state != TrackerStatus.IDLE
    assert status.header.stamp == stamp(15, 100)
    _good(client, 16)
    det = wait_until(lambda: client.snapshot()[0], 20, "detection after a resized frame")[-1][1]
    assert det.id == track.track_id and det.header.stamp == stamp(16, 100)
    assert node.alive()


def test_absurd_init_requests_leave_the_track_untouched(ros):
    node, client = ros
    newest_status = _last_status(client)
    current = newest_status.track_id
    assert current
    requests = [
        ([100, 80, 0, 40], None, "degenerate"),
        ([300, 80, 60, 40], None, "extends beyond the 320x240 image"),
        ([0, 0, 4000000, 4000000], None, "extends beyond"),
        ([10, 10, 20, 20], stamp(0, 5), "older than the oldest buffered frame"),
        ([10, 10, 20, 20], stamp(0, 9999), "newer than the newest"),
    ]
    for box, stamp_, reason in requests:
        reply = client.init(box, stamp_)
        assert not reply.success and reply.track_id == ""
        assert reason in reply.message, reply.message
        if "older" in reason:
            assert re.search(r"the buffer holds \d+ of at most \d+ frames", reply.message), reply.message
    # A stamp inside the buffered span that no frame carries.
    _good(client, 20)
    _good(client, 22)
    wait_until(lambda: "degenerate" in client.init([0, 0, 0, 0], stamp(22, 100)).message, 20, "frame 22 buffered")
    reply = client.init([10, 10, 20, 20], stamp(21, 100))
    assert not reply.success and "no buffered frame has stamp" in reply.message

    client.clear()
    _good(client, 30)
    det = wait_until(lambda: client.snapshot()[0], 20, "detection after refused inits")[-1][1]
    assert det.id == current


def test_fast_publisher_drops_stale_frames_while_services_answer(ros):
    node, client = ros
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    big = RNG.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    pub = client.publisher()
    running = threading.Event()
    running.set()
    sent = []

    def camera():
        i = 0
        while running.is_set():
            pub.publish(image_msg(big, "bgr8", stamp(i, 500)))
            sent.append(i)
            i += 1
            time.sleep(1 / 60)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        replies = []
        for _ in range(3):
            time.sleep(0.7)
            replies.append(client.init([200, 150, 80, 60], label="fast"))
            replies.append(client.stop_tracking())
        replies.append(client.init([200, 150, 80, 60], label="fast"))
        time.sleep(2.0)
    finally:
        running.clear()
        thread.join()

    assert all(r is not None for r in replies)
    assert all(r.success for r in replies), [r.message for r in replies]
    track_ids = {r.track_id for r in replies if hasattr(r, "track_id")}
    assert len(track_ids) == 4  # every re-init got a fresh id
    status = wait_until(
        lambda: [s for s in client.snapshot()[1] if s.track_id == replies[-1].track_id and s.frames_processed], 20,
        "status of the last track",
    )[-1]
    assert status.frames_dropped > 0, "a 60 Hz camera must outrun a 1-thread CPU backend"
    assert status.frames_processed < len(sent)
    diag = wait_until(lambda: list(diagnostics), 5, "diagnostics")
    values = {kv.key: kv.value for kv in diag[-1].status[0].values}
    assert int(values["frames_dropped"]) > 0 and float(values["latency_ms_p50"]) > 0
    assert node.alive()


def test_diagnostics_report_input_rates_of_fast_cameras(ros):
    """The rates are counted over the last 5 s, however fast the camera (they were capped at 24 Hz)."""
    node, client = ros
    client.stop_tracking()
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    tiny = RNG.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    pub = client.publisher()
    for i in range(200):  # 200 frames well within one 5 s window: at least 40 Hz
        pub.publish(image_msg(tiny, "bgr8", stamp(i, 700)))
        time.sleep(0.002)
    time.sleep(1.5)  # the next 1 Hz diagnostics
    diag = wait_until(lambda: list(diagnostics), 5, "diagnostics")[-1]
    rate = float({kv.key: kv.value for kv in diag.status[0].values}["input_rate_hz"])
    assert rate >= 30.0, rate
    assert node.alive()


def test_frames_repeating_the_newest_stamp_are_counted_and_reported(ros):
    """A driver whose stamps stand still gets its first frame tracked and the rest ignored, in the open."""
    node, client = ros
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    pub = client.publisher()
    for _ in range(6):
        pub.publish(image_msg(SCENE, "rgb8", stamp(0, 800)))
        time.sleep(0.05)

    def repeated():
        return int({kv.key: kv.value for kv in diagnostics[-1].status[0].values}["frames_with_repeated_stamp"])

    wait_until(lambda: diagnostics and repeated() >= 5, 10, "the repeated frames in the diagnostics")
    wait_until(lambda: "repeat the newest stamp" in node.log(), 5, "a warning about the repeated stamps")
    assert node.alive()
