"""Through ROS, the node tracks exactly like the framework-free tracker on the parity fixture.

One node process (MixFormerV2-S with the fixture's deterministic weights, LaSOT preset) serves
every test here. Frames go out as bgr8 over DDS, the box is given for frame 0 by stamp while
later frames are already buffered, and the Detection2D outputs must equal the official
tracker's recorded boxes and scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters

from mixformer_ros.msg import TrackerStatus
from node_harness import assert_matches_fixture_run, image_msg, running_node, stamp, wait_until
from parity import load_npz, write_fixture_checkpoint

DOMAIN = 40
FRAME_ID = "parity_camera_optical"
BUFFERED = 6  # frames 0..5 are published before ~/init; 6..11 arrive afterwards

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def fixture_data():
    return load_npz("video.npz"), load_npz("tracker_S.npz")


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_parity")
    checkpoint = tmp / "fixture_S.pth.tar"
    write_fixture_checkpoint("S", checkpoint)
    params = {
        "variant": "S",
        "checkpoint": str(checkpoint),
        "preset": "lasot",
        "search_factor": 4.4,
        "update_interval": 200,
        "publish_debug_image": True,
    }
    with running_node(DOMAIN, params, tmp) as (node, client):
        yield node, client


def _publish(client, frames, index, base_sec=1000):
    """Frame ``index`` of the fixture video; each test uses its own ``base_sec`` so stamps never repeat."""
    msg = image_msg(np.ascontiguousarray(frames[index]), "bgr8", stamp(index, base_sec), FRAME_ID)
    client.publisher().publish(msg)


def _init_when_buffered(client, box, stamp_):
    """Frames are in flight: wait until the node holds ``stamp_``, then initialise on it."""
    client.ensure_delivery(None, stamp_)
    response = client.init(box, stamp_)
    assert response.success, response.message
    return response


def _call_parameter_service(client, srv_type, service: str, request):
    """One call to the node's ``service`` (e.g. set_parameters) through a client made for it."""
    srv = client.node.create_client(srv_type, f"{client.ns}/mixformer_tracker/{service}")
    assert srv.wait_for_service(timeout_sec=10)
    response = client._call(srv, request, 30.0)
    client.node.destroy_client(srv)
    return response


def _set_params(client, **values):
    req = SetParameters.Request()
    for name, value in values.items():
        if isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        elif isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        req.parameters.append(ParameterMsg(name=name, value=pv))
    return _call_parameter_service(client, SetParameters, "set_parameters", req).results


def test_detections_match_tracker_fixture(ros, fixture_data):
    node, client = ros
    video, expected = fixture_data
    frames = video["frames_bgr"]
    pub = client.publisher()
    client.wait_for_subscriber(pub)
    client.ensure_delivery(lambda: _publish(client, frames, 11, 900), stamp(11, 900))
    client.clear()

    for i in range(BUFFERED):
        _publish(client, frames, i)
    client.ensure_delivery(None, stamp(BUFFERED - 1))
    response = _init_when_buffered(client, video["init_box_xywh"], stamp(0))
    assert response.track_id
    wait_until(lambda: len(client.snapshot()[0]) >= BUFFERED - 1, 60, "catch-up detections")
    for i in range(BUFFERED, len(frames)):
        _publish(client, frames, i)
        wait_until(lambda: len(client.snapshot()[0]) >= i, 60, f"detection for frame {i}")

    detections, statuses = client.snapshot()
    ordered = assert_matches_fixture_run(detections, expected, len(frames))

    # Header copied from the input image; one track id; label default; theta zero.
    assert all(m.header.frame_id == FRAME_ID for m in ordered)
    assert {m.id for m in ordered} == {response.track_id}
    assert all(m.results[0].hypothesis.class_id == "object" for m in ordered)
    assert all(m.bbox.center.theta == 0.0 for m in ordered)
    tracking = [s for s in statuses if s.track_id == response.track_id and s.frames_processed > 0]
    assert tracking and tracking[-1].state == TrackerStatus.TRACKING
    assert (tracking[-1].backend, tracking[-1].device, tracking[-1].precision) == ("torch", "cpu", "fp32")
    assert tracking[-1].header.frame_id == FRAME_ID
    assert max(s.frames_dropped for s in tracking) == 0  # one frame at a time: nothing was stale

    # The debug image was enabled: annotated frames with the input header and size.
    debug = wait_until(lambda: list(client.debug_images), 10, "debug image")
    assert debug[-1].encoding == "rgb8" and (debug[-1].width, debug[-1].height) == (640, 480)
    assert debug[-1].header.frame_id == FRAME_ID


def test_reinit_gives_new_track_id_and_stop_goes_idle(ros, fixture_data):
    node, client = ros
    video, _ = fixture_data
    frames = video["frames_bgr"]
    first = client.init([100, 80, 60, 40], label="cup")  # zero stamp: the newest frame
    assert first.success, first.message
    second = client.init([120, 90, 60, 40], label="cup")
    assert second.success, second.message
    assert second.track_id and second.track_id != first.track_id

    client.clear()
    _publish(client, frames, 3, 2000)  # the next frame is tracked under the new id
    det = wait_until(lambda: client.snapshot()[0], 30, "detection after re-init")[-1][1]
    assert det.id == second.track_id
    assert det.results[0].hypothesis.class_id == "cup"

    stopped = client.stop_tracking()
    assert stopped.success and second.track_id in stopped.message
    idle = wait_until(
        lambda: [s for s in client.snapshot()[1] if s.state == TrackerStatus.IDLE], 10, "IDLE status"
    )
    assert idle[-1].track_id == ""
    client.clear()
    _publish(client, frames, 4, 2000)
    again = client.stop_tracking()
    assert again.success and "idle" in again.message
    assert client.snapshot()[0] == []  # idle: frames are buffered, nothing is tracked


def test_lost_and_recovered_follow_runtime_parameters(ros, fixture_data):
    node, client = ros
    video, _ = fixture_data
    frames = video["frames_bgr"]
    _publish(client, frames, 0, 3000)
    response = _init_when_buffered(client, video["init_box_xywh"], stamp(0, 3000))
    assert response.success

    # Fixture scores are ~0.4: a threshold of 0.99 with patience 2 must declare LOST.
    results = _set_params(client, lost_threshold=0.99, lost_patience=2)
    assert all(r.successful for r in results), [r.reason for r in results]
    client.clear()
    for i in range(1, 4):
        _publish(client, frames, i, 3000)
        wait_until(lambda: len(client.snapshot()[0]) >= i, 30, f"detection {i}")
    states = [s.state for s in client.snapshot()[1] if s.frames_processed > 0]
    assert states[-1] == TrackerStatus.LOST
    lost = [s for s in client.snapshot()[1] if s.state == TrackerStatus.LOST]
    assert "lost" in lost[0].message

    results = _set_params(client, lost_threshold=0.1)
    assert all(r.successful for r in results)
    client.clear()
    _publish(client, frames, 4, 3000)
    wait_until(lambda: client.snapshot()[0], 30, "detection after threshold change")
    recovered = wait_until(
        lambda: [s for s in client.snapshot()[1] if s.state == TrackerStatus.TRACKING and "recovered" in s.message],
        10,
        "recovery status",
    )
    assert recovered[-1].track_id == response.track_id

    # Parameters that shape the model are read-only and say so.
    refused = _set_params(client, variant="B")
    assert not refused[0].successful
    request = DescribeParameters.Request(names=["size_update_rate"])
    (damping,) = _call_parameter_service(client, DescribeParameters, "describe_parameters", request).descriptors
    assert damping.read_only and damping.type == ParameterType.PARAMETER_DOUBLE
    assert (damping.floating_point_range[0].from_value, damping.floating_point_range[0].to_value) == (0.01, 1.0)
