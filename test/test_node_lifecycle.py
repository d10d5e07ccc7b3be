"""Lifecycle behaviour: a bad model file stops the node with a clear error; transitions by service work."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

from mixformer_ros.msg import TrackerStatus
from mixformer_ros.srv import InitTracker
from sensor_msgs.msg import RegionOfInterest

from conftest import ros_subprocess_env
from node_harness import Client, NodeProcess, image_msg, stamp, wait_until
from paths import REPO_ROOT

DOMAIN = 44
# Nodes ended by SIGTERM get a domain of their own: the next test's client must not discover them.
SIGTERM_DOMAIN = 42
pytestmark = pytest.mark.timeout(240)


def _run_to_exit(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mixformer_ros.tracker_node", "--ros-args", *args]
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=ros_subprocess_env(DOMAIN), capture_output=True, text=True, timeout=timeout
    )


def test_missing_checkpoint_exits_nonzero_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "model.pth.tar"
    result = _run_to_exit(["-p", f"checkpoint:={missing}"])
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "cannot load the tracker model" in out and str(missing) in out


def test_corrupt_checkpoint_exits_nonzero(tmp_path):
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = _run_to_exit(["-p", f"checkpoint:={corrupt}"])
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "cannot load the tracker model" in out and "corrupt.pth.tar" in out


def test_bad_parameter_value_refuses_to_configure():
    result = _run_to_exit(["-p", "backend:=tensorrt"])
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "backend='tensorrt' is not one of torch, onnxruntime" in out
    # Out of the declared range, or of the wrong type: refused when declared, in one line.
    for override, reason in (("size_update_rate:=0.0", "size_update_rate out of range"),
                             ("search_factor:=abc", "expecting type 'DOUBLE'")):
        result = _run_to_exit(["-p", override])
        out = result.stdout + result.stderr
        assert result.returncode == 1 and "bad parameter" in out and reason in out and "Traceback" not in out, out


def test_precision_the_backend_does_not_offer_refuses_to_configure():
    result = _run_to_exit(["-p", "backend:=torch", "-p", "precision:=int8"])
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "cannot load the tracker model" in out and "unknown precision 'int8'" in out


def test_a_trained_checkpoint_of_any_shape_loads_with_no_other_parameter(tmp_path):
    """variant defaults to auto: the demo model (width 128, patch 8) needs no variant:=auto."""
    node = NodeProcess(DOMAIN, {"checkpoint": REPO_ROOT / "models" / "demo_tracker.pth.tar"}, tmp_path)
    try:
        wait_until(lambda: "active: listening" in node.log() or not node.alive(), 90, "the node to start")
        assert node.alive() and "UNTRAINED" not in node.log(), node.log()
        # The file records the crop it was trained with, which replaces the preset's (4.4 for lasot).
        assert "preset lasot: search factor 4.5, template factor 2, update interval 200" in node.log(), node.log()
    finally:
        assert node.stop() == 0, node.log()


def test_sigterm_ends_the_node_cleanly_while_it_loads_and_while_inits_wait(tmp_path):
    """docker stop and launch's escalation send SIGTERM: exit code 0 and no traceback, also while
    the model is still loading, while unconfigured and while ~/init calls wait for the inference
    thread (the node once hung in the last two, or died with InvalidHandle)."""
    for folder in ("loading", "idle", "inits"):
        (tmp_path / folder).mkdir()
    loading = NodeProcess(SIGTERM_DOMAIN, {"variant": "S", "num_threads": 1}, tmp_path / "loading")
    wait_until(lambda: "Fast DDS profile" in loading.log(), 60, "the node to be created")
    loading.proc.send_signal(signal.SIGTERM)
    assert loading.proc.wait(30) == 0, loading.log()
    assert "Traceback" not in loading.log() and "configured" not in loading.log(), loading.log()
    loading.stop()

    idle = NodeProcess(SIGTERM_DOMAIN, {"autostart": False}, tmp_path / "idle")  # unconfigured: nothing wakes its executor
    wait_until(lambda: "Fast DDS profile" in idle.log(), 60, "the node to be created")
    time.sleep(1.0)
    idle.proc.send_signal(signal.SIGTERM)
    assert idle.proc.wait(30) == 0, idle.log()
    idle.stop()

    busy = NodeProcess(SIGTERM_DOMAIN, {"variant": "S", "num_threads": 1}, tmp_path / "inits")
    client = Client(SIGTERM_DOMAIN)
    stop_camera = threading.Event()
    try:
        client.wait_for_services()
        pub = client.publisher()
        client.wait_for_subscriber(pub)
        scene = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)

        def camera():
            for i in itertools.count():
                if stop_camera.is_set():
                    return
                pub.publish(image_msg(scene, "rgb8", stamp(i)))
                time.sleep(1 / 30)

        threading.Thread(target=camera, daemon=True).start()
        assert client.init([100, 80, 200, 150]).success
        for j in range(8):
            req = InitTracker.Request()
            req.roi = RegionOfInterest(x_offset=100 + j, y_offset=80, width=200, height=150)
            client.init_client.call_async(req)
        busy.proc.send_signal(signal.SIGTERM)
        assert busy.proc.wait(30) == 0, busy.log()
        assert "Traceback" not in busy.log(), busy.log()
    finally:
        stop_camera.set()
        client.close()
        busy.stop()


class Lifecycle:
    """The node's lifecycle services, called from the test client."""

    def __init__(self, client: Client):
        base = f"{client.ns}/mixformer_tracker"
        self.client = client
        self.get_state = client.node.create_client(GetState, f"{base}/get_state")
        self.change = client.node.create_client(ChangeState, f"{base}/change_state")
        assert self.get_state.wait_for_service(timeout_sec=60) and self.change.wait_for_service(timeout_sec=10)

    def state(self) -> int:
        return self.client._call(self.get_state, GetState.Request(), 30).current_state.id

    def transition(self, transition_id: int) -> bool:
        req = ChangeState.Request()
        req.transition.id = transition_id
        return self.client._call(self.change, req, 120).success


def test_lifecycle_transitions_by_service(tmp_path):
    node = NodeProcess(DOMAIN, {"autostart": False, "frame_buffer_size": 5}, tmp_path)
    client = Client(DOMAIN)
    try:
        lifecycle = Lifecycle(client)
        state, transition = lifecycle.state, lifecycle.transition

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        diagnostics = []
        client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        client.wait_for_services(30)
        inactive = wait_until(lambda: diagnostics, 10, "diagnostics while inactive")[-1].status[0]
        assert {kv.key: kv.value for kv in inactive.values}["state"] == "INACTIVE" and inactive.message == "inactive"
        reply = client.init([1, 1, 5, 5])
        assert not reply.success and "not active" in reply.message

        assert transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        frame = np.full((120, 160, 3), 90, np.uint8)
        frame[40:80, 60:100] = (250, 30, 30)
        pub = client.publisher()
        client.wait_for_subscriber(pub)
        client.ensure_delivery(lambda: pub.publish(image_msg(frame, "rgb8", stamp(0))), stamp(0))
        reply = client.init([60, 40, 40, 40], stamp(0))
        assert reply.success, reply.message
        pub.publish(image_msg(frame, "rgb8", stamp(1)))
        wait_until(lambda: client.snapshot()[0], 30, "a detection while active")

        # Deactivate: processing stops, the model and frames are released, init is refused.
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        reply = client.init([60, 40, 40, 40])
        assert not reply.success and "not active" in reply.message

        # Activate again reloads the model; the buffer starts empty.
        assert transition(Transition.TRANSITION_ACTIVATE)
        reply = client.init([60, 40, 40, 40])
        assert not reply.success and "no image received yet" in reply.message
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.alive()
    finally:
        client.close()
        code = node.stop()
        print(node.log())
    assert code == 0


def test_stop_and_deactivate_while_tracking_leave_the_node_idle_and_working(tmp_path):
    """The inference thread publishes each result while the track is still the current one: a
    ~/stop or deactivate meanwhile is the last word on ~/status, and a cleanup right after a
    deactivate never pulls the publishers from under it (which once killed that thread)."""
    node = NodeProcess(DOMAIN, {"frame_buffer_size": 20, "publish_debug_image": True, "num_threads": 1}, tmp_path)
    client = Client(DOMAIN)
    frames = [np.full((960, 1280, 3), 60 + 5 * i, np.uint8) for i in range(20)]  # large debug images
    try:
        lifecycle = Lifecycle(client)
        client.wait_for_services()
        for cycle in range(4):
            pub = client.publisher(depth=len(frames))  # all of the burst must arrive
            client.wait_for_subscriber(pub)
            base = 100 * (cycle + 1)
            for i, frame in enumerate(frames):
                pub.publish(image_msg(frame, "rgb8", stamp(i, base)))
            client.ensure_delivery(None, stamp(len(frames) - 1, base))
            client.clear()
            reply = client.init([600, 400, 80, 80], stamp(0, base))  # 19 buffered frames to catch up on
            assert reply.success, reply.message
            wait_until(lambda: client.debug_images, 30, "a debug image while catching up")
            if cycle % 2 == 0:
                assert client.stop_tracking().success
                ended = "stopped track"
            else:
                assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
                assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
                assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
                assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
                client.wait_for_services(30)
                ended = "deactivated"
            time.sleep(0.5)  # anything still in flight arrives
            statuses = client.snapshot()[1]
            last_of_track = [m for m in statuses if m.track_id == reply.track_id or ended in m.message][-1]
            assert ended in last_of_track.message and last_of_track.state == TrackerStatus.IDLE
        pub = client.publisher()
        client.ensure_delivery(lambda: pub.publish(image_msg(frames[0], "rgb8", stamp(0, 900))), stamp(0, 900))
        reply = client.init([600, 400, 80, 80], stamp(0, 900))
        assert reply.success, reply.message
        pub.publish(image_msg(frames[1], "rgb8", stamp(1, 900)))
        wait_until(lambda: client.snapshot()[0], 30, "a detection after the cycles")
        assert node.alive()
    finally:
        client.close()
        code = node.stop()
        log = node.log()
        print(log)
    assert code == 0 and "Exception in thread" not in log and "inference thread error" not in log
