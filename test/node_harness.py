"""Helpers for the tracker-node tests: a node in its own process, and a client side in this one.

The node runs as ``python -m mixformer_ros.tracker_node`` in a subprocess with its own
ROS_DOMAIN_ID, exactly as a user starts it. The test side gets its own rclpy Context (so test
modules never share DDS participants) and spins it on a background thread; messages it
receives are collected into lists that tests read under a lock.
"""

from __future__ import annotations

import array
import contextlib
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2D

from conftest import ros_subprocess_env
from mixformer_ros.msg import TrackerStatus
from mixformer_ros.srv import InitTracker
from paths import REPO_ROOT

NODE = "mixformer_tracker"


class NodeProcess:
    """The tracker node in a subprocess; its log goes to a file that failures print."""

    def __init__(
        self,
        domain_id: int,
        params: dict,
        log_dir: Path,
        namespace: str = "/t",
        remap: dict | None = None,
        params_file: Path | None = None,
        executable: list[str] | None = None,
    ):
        self.namespace = namespace
        self.log_path = Path(log_dir) / f"node_{domain_id}.log"
        cmd = executable or [sys.executable, "-m", "mixformer_ros.tracker_node"]
        cmd = [*cmd, "--ros-args", "-r", f"__ns:={namespace}"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        for key, value in params.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            cmd += ["-p", f"{key}:={value}"]
        for src, dst in (remap or {}).items():
            cmd += ["-r", f"{src}:={dst}"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=ros_subprocess_env(domain_id), stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Client:
    """Test-side ROS participant: publishes frames, calls the services, records the outputs."""

    def __init__(self, domain_id: int, namespace: str = "/t"):
        self.ns = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self._detection_arrived = threading.Condition(self.lock)
        self.detections: list[tuple[float, Detection2D]] = []
        self.statuses: list[TrackerStatus] = []
        self.debug_images: list[Image] = []
        base = f"{namespace}/{NODE}"
        self.node.create_subscription(Detection2D, f"{base}/detection", self._on_det, 50)
        self.node.create_subscription(TrackerStatus, f"{base}/status", self._on_status, 50)
        self.node.create_subscription(Image, f"{base}/debug_image", self._on_debug, 5)
        self.init_client = self.node.create_client(InitTracker, f"{base}/init")
        self.stop_client = self.node.create_client(Trigger, f"{base}/stop")
        self._publishers: dict = {}
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_det(self, msg):
        with self.lock:
            self.detections.append((time.monotonic(), msg))
            self._detection_arrived.notify_all()

    def wait_for_detection(self, stamp_: Time, timeout: float) -> float:
        """Blocks (without polling, so the receiving thread keeps the GIL) until the detection of
        the frame with this stamp arrives; returns its receipt time (time.monotonic())."""

        def arrival():
            for received_at, msg in reversed(self.detections):
                if msg.header.stamp == stamp_:
                    return received_at
            return None

        with self.lock:
            if not self._detection_arrived.wait_for(lambda: arrival() is not None, timeout):
                raise TimeoutError(f"no detection for stamp {stamp_.sec}.{stamp_.nanosec:09d} within {timeout} s")
            return arrival()

    def _on_status(self, msg):
        with self.lock:
            self.statuses.append(msg)

    def _on_debug(self, msg):
        with self.lock:
            self.debug_images.append(msg)

    def publisher(self, reliability: str = "reliable", topic: str = "image", msg_type=Image, depth: int = 10):
        """A reliable KEEP_LAST writer drops its oldest sample once ``depth`` newer ones wait for
        acknowledgement, so a test that bursts more frames than that must raise ``depth``."""
        key = (reliability, topic, depth)
        if key not in self._publishers:
            if reliability == "sensor_data":
                qos = qos_profile_sensor_data
            else:
                qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
            self._publishers[key] = self.node.create_publisher(msg_type, f"{self.ns}/{topic}", qos)
        return self._publishers[key]

    def wait_for_subscriber(self, pub, timeout: float = 20.0) -> None:
        wait_until(lambda: pub.get_subscription_count() > 0, timeout, "the node never subscribed")

    def wait_for_services(self, timeout: float = 60.0) -> None:
        if not self.init_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("~/init never appeared")
        if not self.stop_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("~/stop never appeared")

    def init(self, roi_xywh, stamp: Time | None = None, label: str = "", timeout: float = 60.0):
        req = InitTracker.Request()
        x, y, w, h = (int(v) for v in roi_xywh)
        req.roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
        if stamp is not None:
            req.stamp = stamp
        req.label = label
        return self._call(self.init_client, req, timeout)

    def ensure_delivery(self, publish, stamp_: Time, timeout: float = 30.0) -> None:
        """Publish (when ``publish`` is given) until the node has buffered a frame with this stamp.

        A sample sent right after discovery can be lost while the reader side is still
        matching; a zero-size box is refused as degenerate only once the stamp is buffered, so
        it probes the buffer without starting a track.
        """
        def delivered():
            if publish is not None:
                publish()
            reply = self.init([0, 0, 0, 0], stamp_)
            assert not reply.success, reply.message
            return "degenerate" in reply.message

        wait_until(delivered, timeout, f"the node never buffered the frame stamped {stamp_.sec}.{stamp_.nanosec:09d}", interval=0.1)

    def stop_tracking(self, timeout: float = 30.0):
        return self._call(self.stop_client, Trigger.Request(), timeout)

    def _call(self, client, req, timeout):
        future = client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"no answer from {client.srv_name} within {timeout}s")
        return future.result()

    def snapshot(self):
        with self.lock:
            return list(self.detections), list(self.statuses)

    def clear(self) -> None:
        with self.lock:
            self.detections.clear()
            self.statuses.clear()
            self.debug_images.clear()

    def close(self) -> None:
        self._spinning = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextlib.contextmanager
def running_node(domain_id: int, params: dict, log_dir: Path, **node_options):
    """A node process and a client that sees its services; on exit the node must stop cleanly."""
    node = NodeProcess(domain_id, params, log_dir, **node_options)
    client = Client(domain_id)
    try:
        client.wait_for_services()
        yield node, client
    finally:
        client.close()
        code = node.stop()
        print(node.log())
        assert code == 0, f"node exited with {code}"


def track_fixture_video(domain_id: int, params: dict, log_dir: Path, video: dict, start_timeout: float = 300):
    """Starts a node, buffers every frame of the parity fixture's video, then inits on frame 0 by
    stamp, so the node catches up in order; returns (detections, statuses) once all are tracked."""
    node = NodeProcess(domain_id, params, log_dir)
    client = Client(domain_id)
    frames = video["frames_bgr"]
    try:
        client.wait_for_services(timeout=start_timeout)  # an onnxruntime node exports the network first
        pub = client.publisher()
        client.wait_for_subscriber(pub)
        for i in range(len(frames)):  # all buffered before the box arrives
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
    return detections, statuses


def assert_matches_fixture_run(detections, expected: dict, num_frames: int, box_atol: float = 1e-3,
                               score_atol: float = 1e-5) -> list:
    """Detections of frames 1..num_frames-1 (matched by stamp) equal the fixture's `real` run; returns them in order."""
    from mixformer_ros.ros.conversions import detection_to_xywh, stamp_to_ns

    by_stamp = {stamp_to_ns(m.header.stamp): m for _, m in detections}
    ordered = [by_stamp[stamp_to_ns(stamp(i))] for i in range(1, num_frames)]
    boxes = np.array([detection_to_xywh(m) for m in ordered])
    scores = np.array([m.results[0].hypothesis.score for m in ordered])
    np.testing.assert_allclose(boxes, expected["real__out_boxes_xywh"][1:], atol=box_atol, rtol=0)
    np.testing.assert_allclose(scores, expected["real__out_scores"][1:], atol=score_atol, rtol=0)
    return ordered


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s: {what}")


def stamp(index: int, base_sec: int = 1000) -> Time:
    """A distinct, easy-to-read stamp per frame index (20 ms apart)."""
    ns = index * 20_000_000
    return Time(sec=base_sec + ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg(pixels: np.ndarray, encoding: str, stamp_: Time, frame_id: str = "camera_optical") -> Image:
    msg = Image()
    msg.header.stamp = stamp_
    msg.header.frame_id = frame_id
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = pixels.strides[0] if pixels.ndim >= 2 else 0
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


def compressed_msg(data: bytes, stamp_: Time, fmt: str = "jpeg", frame_id: str = "camera_optical") -> CompressedImage:
    msg = CompressedImage()
    msg.header.stamp = stamp_
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = array.array("B", data)
    return msg


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (past OpenCV's decode limit when large)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")

