"""Live replay evaluation: play a bag into the running tracker node and score what it publishes.

A small rclpy player publishes the bag's frames (raw bytes as recorded, no re-encoding) and camera
info on the node's input topic, initialises the node through ``~/init`` with the first ground
truth, and records ``~/detection`` and ``~/status``. Results are joined to the ground truth by
``header.stamp``.

Two modes:

* ``realtime``: frames go out at the recorded rate (times ``rate``) whatever the node does, as a
  camera would send them. Each frame is scored with the newest box that had come back before the
  next frame went out (the VOT real-time rule): a frame the node skipped, or answered late, keeps
  the box the user held, so accuracy reflects what a user would have seen. End-to-end latency is
  the time from publishing a frame to receiving its detection (same clock, same process).
* ``lockstep``: each frame goes out as soon as the detection of the previous one came back, so
  no frame is skipped and the boxes equal offline evaluation of the same bag.

The bag's stamps are kept; with ``--clock`` the player also publishes ``/clock`` so a node run
with ``use_sim_time:=true`` sees the bag's time.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2D

from mixformer_ros.evaluation.bags import (
    COMPRESSED_MSG,
    BagInfo,
    detection_to_box,
    header_stamp_ns,
    iter_bag_messages,
    make_typestore,
    read_bag_info,
    stamp_to_ns,
)
from mixformer_ros.evaluation.report import (
    Evaluation,
    evaluate_results,
    per_sequence_rows,
    plain_json,
    summary_rows,
    to_markdown,
)
from mixformer_ros.evaluation.results import SequenceResult, write_result
from mixformer_ros.msg import TrackerStatus
from mixformer_ros.srv import InitTracker

log = logging.getLogger(__name__)

MODES = ("realtime", "lockstep")
# Reliable keep-last: the only kind that carries large frames across processes with default
# Fast DDS settings (see docs/node.md); deep enough that a burst at start-up is not lost.
_FRAME_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# Frame 0 is sent again only if the node reports no frame at all for this long.
_RESEND_FRAME0_S = 2.0
_RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class ReplayConfig:
    mode: str = "realtime"
    node: str = "/mixformer_tracker"  # fully qualified name of the tracker node
    camera_topic: str | None = None  # default: <node namespace>/image[/compressed]
    rate: float = 1.0
    publish_clock: bool = False
    timeout_s: float = 10.0
    image_topic: str | None = None  # camera topic inside the bag
    gt_topic: str | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if not self.node.startswith("/"):
            self.node = "/" + self.node


@dataclass
class ReplayRecord:
    """What the player sent and what came back."""

    init_box: np.ndarray
    mode: str = "realtime"  # realtime: a detection counts only until the next frame goes out
    init_message: str = ""
    track_id: str = ""  # the node's identity of this replay's track
    published_at: dict[int, float] = field(default_factory=dict)  # stamp ns -> monotonic s
    detections: dict[int, tuple[np.ndarray, float, float]] = field(default_factory=dict)  # stamp -> box, score, t
    statuses: list = field(default_factory=list)  # TrackerStatus messages in arrival order
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class _Frame:
    """One camera message of the bag and the camera_info messages recorded with it."""

    stamp_ns: int  # header stamp of the image: the node's detection carries it back
    bag_time_ns: int  # when it was recorded: pacing and /clock
    image: bytes  # CDR as recorded
    infos: list[bytes] = field(default_factory=list)


def camera_topic_for(config: ReplayConfig, compressed: bool) -> str:
    if config.camera_topic:
        return config.camera_topic
    namespace = config.node.rsplit("/", 1)[0]
    return f"{namespace}/image" + ("/compressed" if compressed else "")


def _roi(box_xywh, width: int, height: int) -> RegionOfInterest:
    """Integer ROI of a float box, clipped to the image (the node refuses boxes that leave it)."""
    x0 = int(np.clip(round(float(box_xywh[0])), 0, width - 1))
    y0 = int(np.clip(round(float(box_xywh[1])), 0, height - 1))
    x1 = int(np.clip(round(float(box_xywh[0] + box_xywh[2])), x0 + 1, width))
    y1 = int(np.clip(round(float(box_xywh[1] + box_xywh[3])), y0 + 1, height))
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0, do_rectify=False)


def init_box_for(box_xywh, width: int, height: int) -> np.ndarray:
    """The box the node is initialised with: the ground truth as an integer, clipped ROI.

    Offline evaluation that must equal a live run initialises with this box too.
    """
    roi = _roi(box_xywh, width, height)
    return np.array([roi.x_offset, roi.y_offset, roi.width, roi.height], dtype=np.float64)


class ReplayNode(Node):
    """Publisher of bag frames and recorder of the tracker node's outputs."""

    def __init__(self, config: ReplayConfig, compressed: bool):
        super().__init__("mixformer_replay")
        self.config = config
        self._lock = threading.Condition()
        self.record: ReplayRecord | None = None
        image_type = CompressedImage if compressed else Image
        self.camera_topic = camera_topic_for(config, compressed)
        info_topic = self.camera_topic.rsplit("/compressed", 1)[0].rsplit("/", 1)[0] + "/camera_info"
        self.image_pub = self.create_publisher(image_type, self.camera_topic, _FRAME_QOS)
        self.info_pub = self.create_publisher(CameraInfo, info_topic, _FRAME_QOS)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if config.publish_clock else None
        self.create_subscription(Detection2D, f"{config.node}/detection", self._on_detection, _RESULT_QOS)
        self.create_subscription(TrackerStatus, f"{config.node}/status", self._on_status, _RESULT_QOS)
        self.init_client = self.create_client(InitTracker, f"{config.node}/init")
        self.stop_client = self.create_client(Trigger, f"{config.node}/stop")

    def _on_detection(self, msg: Detection2D) -> None:
        now = time.monotonic()
        with self._lock:
            if self.record is not None:
                score = float(msg.results[0].hypothesis.score) if msg.results else float("nan")
                self.record.detections[stamp_to_ns(msg.header.stamp)] = (detection_to_box(msg), score, now)
                self._lock.notify_all()

    def _on_status(self, msg: TrackerStatus) -> None:
        with self._lock:
            if self.record is not None:
                self.record.statuses.append(msg)

    def wait_for_detection(self, stamp_ns: int, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: stamp_ns in self.record.detections, timeout=timeout_s)

    def publish(self, frame: _Frame) -> None:
        """Publish a frame's recorded CDR bytes as they are, image first; ``/clock`` before it when asked for."""
        if self.clock_pub is not None:
            t = frame.bag_time_ns
            self.clock_pub.publish(Clock(clock=Time(sec=t // 10**9, nanosec=t % 10**9)))
        with self._lock:
            self.record.published_at[frame.stamp_ns] = time.monotonic()
        self.image_pub.publish(frame.image)
        for info in frame.infos:
            self.info_pub.publish(info)


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(0.02)


def _initialise(node: ReplayNode, info: BagInfo, frame0: _Frame, width: int, height: int) -> None:
    """Publish frame 0, then ask ~/init to track the first ground truth on it.

    The request names frame 0 by its stamp, so it is retried until the node has that frame.
    Frame 0 is sent again only when the node still has no frame after a while: a second copy
    in the node's buffer would be tracked as one more frame.
    """
    config = node.config
    _wait(lambda: node.image_pub.get_subscription_count() > 0, config.timeout_s,
          f"the tracker node to subscribe to {node.camera_topic}")
    if not node.init_client.wait_for_service(timeout_sec=config.timeout_s):
        raise TimeoutError(f"service {config.node}/init is not available")
    request = InitTracker.Request()
    request.roi = _roi(info.init_box, width, height)
    request.stamp = Time(sec=int(info.stamps_ns[0]) // 10**9, nanosec=int(info.stamps_ns[0]) % 10**9)
    request.label = info.name
    deadline = time.monotonic() + config.timeout_s
    sent_at = -float("inf")
    while True:
        if time.monotonic() - sent_at > _RESEND_FRAME0_S:
            node.publish(frame0)
            sent_at = time.monotonic()
            time.sleep(0.05)
        future = node.init_client.call_async(request)
        _wait(future.done, config.timeout_s, f"the answer of {config.node}/init")
        response = future.result()
        if response.success:
            node.record.init_message = response.message
            node.record.track_id = response.track_id
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{config.node}/init refused: {response.message}")
        if "no image received" not in response.message:
            sent_at = time.monotonic()  # the node has frames; frame 0 is on its way
        time.sleep(0.1)


def _frame_size(raw: bytes, msgtype: str) -> tuple[int, int]:
    from rclpy.serialization import deserialize_message

    from mixformer_ros.evaluation.bags import image_msg_to_bgr

    msg = deserialize_message(raw, CompressedImage if msgtype == COMPRESSED_MSG else Image)
    if msgtype == COMPRESSED_MSG:
        height, width = image_msg_to_bgr(msg).shape[:2]
        return width, height
    return int(msg.width), int(msg.height)


def replay_bag(bag, config: ReplayConfig, progress: bool = True) -> tuple[BagInfo, ReplayRecord]:
    """Play ``bag`` into the running node; rclpy must be initialised by the caller."""
    info = read_bag_info(bag, config.image_topic, config.gt_topic)
    compressed = info.image_msgtype == COMPRESSED_MSG
    node = ReplayNode(config, compressed)
    executor = SingleThreadedExecutor()  # see mixformer_ros.ros.node.spin_node
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        topics = [info.image_topic] + _info_topics(bag)
        messages = iter_bag_messages(bag, topics)
        frames = _frames(messages, info)
        first = next(frames)
        width, height = _frame_size(first.image, info.image_msgtype)
        node.record = ReplayRecord(init_box=init_box_for(info.init_box, width, height), mode=config.mode)
        _initialise(node, info, first, width, height)
        node.record.started_at = time.monotonic()
        _play(node, info, frames, progress)
        node.record.finished_at = time.monotonic()
        _stop_tracking(node)
        return info, node.record
    finally:
        # Stop the spinning thread before the node and the context go away, or the process
        # aborts in the middleware at exit.
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()


def _info_topics(bag) -> list[str]:
    from rosbags.rosbag2 import Reader

    with Reader(Path(bag)) as reader:
        return sorted({c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"})[:1]


def _frames(messages, info: BagInfo):
    """One _Frame per camera message, in bag order.

    Frames are keyed by header stamp, not by bag time: a recorder stamps each message with its
    arrival, which differs from the camera's stamp and may put a camera_info before or after its
    image. A camera_info goes out with the first image whose stamp is at least its own: its own
    image when the stamps match.
    """
    store = make_typestore()
    stamps = iter(info.stamps_ns)  # the camera messages' header stamps, in the same bag order
    frame, early = None, []  # early: (stamp, raw) camera_info ahead of the images read so far
    for topic, msgtype, bag_time, raw in messages:
        if topic != info.image_topic:
            stamp = header_stamp_ns(store, raw, msgtype)
            if frame is not None and stamp <= frame.stamp_ns:
                frame.infos.append(raw)
            else:
                early.append((stamp, raw))
            continue
        if frame is not None:
            yield frame
        stamp = int(next(stamps))
        frame = _Frame(stamp, bag_time, raw, [r for s, r in early if s <= stamp])
        early = [(s, r) for s, r in early if s > stamp]
    if frame is not None:
        frame.infos += [r for _, r in early]
        yield frame


def _play(node: ReplayNode, info: BagInfo, frames, progress: bool) -> None:
    config = node.config
    iterator = frames
    if progress:
        from tqdm import tqdm

        iterator = tqdm(frames, total=len(info) - 1, desc=f"replay {config.mode}", unit="frame")
    t0 = time.monotonic()
    first_bag_time = None
    last_stamp = None
    for frame in iterator:
        if config.mode == "realtime":
            first_bag_time = frame.bag_time_ns if first_bag_time is None else first_bag_time
            delay = t0 + (frame.bag_time_ns - first_bag_time) / 1e9 / config.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        node.publish(frame)
        last_stamp = frame.stamp_ns
        if config.mode == "lockstep" and not node.wait_for_detection(last_stamp, config.timeout_s):
            log.warning("no detection for frame %d ns within %.1f s; going on", last_stamp, config.timeout_s)
    if last_stamp is not None and config.mode == "realtime":
        # The node may still be working on the newest frame; give it the per-frame timeout.
        node.wait_for_detection(last_stamp, config.timeout_s)
        time.sleep(0.2)  # let the matching status arrive


def _stop_tracking(node: ReplayNode) -> None:
    """Leave the node idle, as it was before the replay."""
    if node.stop_client.wait_for_service(timeout_sec=1.0):
        future = node.stop_client.call_async(Trigger.Request())
        try:
            _wait(future.done, node.config.timeout_s, f"{node.config.node}/stop")
        except TimeoutError as exc:
            log.warning("%s", exc)


@dataclass
class ReplayReport:
    """Accuracy under replay plus latency, throughput and drops."""

    result: SequenceResult
    frames: int  # frames after the initial one
    detections: int
    dropped: int  # frames without a detection (their box is the previous one)
    late: int  # realtime: detections that came back after the next frame went out (scored as dropped)
    node_frames_dropped: int  # the node's own count over this replay, from its statuses
    latency_ms: dict  # end-to-end publish -> detection, p50/p90/p99/mean/max
    node_latency_ms: dict  # TrackerStatus.latency_ms percentiles (arrival -> published in the node)
    throughput_fps: float
    evaluation: Evaluation

    def as_dict(self) -> dict:
        overall = {k: v for k, v in self.evaluation.overall.items() if not isinstance(v, np.ndarray)}
        return plain_json({
            "frames": self.frames, "detections": self.detections, "dropped": self.dropped, "late": self.late,
            "node_frames_dropped": self.node_frames_dropped, "latency_ms": self.latency_ms,
            "node_latency_ms": self.node_latency_ms, "throughput_fps": self.throughput_fps,
            "accuracy": overall,
        })


def _percentiles(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"count": int(values.size), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "mean": float(values.mean()), "max": float(values.max())}


def _deadlines(info: BagInfo, record: ReplayRecord) -> np.ndarray:
    """(N,) monotonic time by which each frame's detection must be back to count: when the next
    frame went out (the last frame: one median frame period after it). Lockstep: no deadline."""
    deadlines = np.full(len(info), np.inf)
    if record.mode == "lockstep":
        return deadlines
    sent = np.array([record.published_at.get(int(s), np.nan) for s in info.stamps_ns])
    deadlines[:-1] = np.where(np.isfinite(sent[1:]), sent[1:], np.inf)
    periods = np.diff(sent[np.isfinite(sent)])
    if np.isfinite(sent[-1]) and periods.size:
        deadlines[-1] = sent[-1] + float(np.median(periods))
    return deadlines


def build_report(info: BagInfo, record: ReplayRecord, name: str, invalid: str = "exclude") -> ReplayReport:
    """Score each frame with the newest detection (by frame stamp) back by its deadline
    (:func:`_deadlines`); a frame without one keeps the box held before it."""
    deadlines = _deadlines(info, record)
    arrivals = sorted((t, stamp) for stamp, (_, _, t) in record.detections.items())
    boxes = np.empty((len(info), 4))
    scores = np.full(len(info), np.nan)
    boxes[0] = record.init_box
    held_box, held_stamp = record.init_box, int(info.stamps_ns[0])
    pending: list[int] = []  # stamps back in time but of frames not reached yet
    next_arrival = late = 0
    for i in range(1, len(info)):
        stamp = int(info.stamps_ns[i])
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= deadlines[i]:
            pending.append(arrivals[next_arrival][1])
            next_arrival += 1
        usable = [s for s in pending if s <= stamp]
        if usable and max(usable) > held_stamp:
            held_stamp = max(usable)
            held_box = record.detections[held_stamp][0]
        pending = [s for s in pending if s > stamp]
        boxes[i] = held_box
        if held_stamp == stamp:
            scores[i] = record.detections[stamp][1]
        elif stamp in record.detections:
            late += 1
    answered = [int(s) for s in info.stamps_ns[1:] if int(s) in record.detections]
    latencies = [(record.detections[s][2] - record.published_at[s]) * 1000.0 for s in answered
                 if s in record.published_at]
    frames = len(info) - 1
    received = len(answered)
    result = SequenceResult(info.name, boxes, None, scores)
    evaluation = evaluate_results(name, [result], [info], invalid)
    last_times = [t for _, _, t in record.detections.values()]
    span = (max(last_times) - record.started_at) if last_times else 0.0
    node_status = [s for s in record.statuses if s.track_id and s.track_id == record.track_id]
    return ReplayReport(
        result=result,
        frames=frames,
        detections=received,
        dropped=frames - received,
        late=late,
        # The node's counter runs over its whole life: count only what this track added.
        node_frames_dropped=int(node_status[-1].frames_dropped - node_status[0].frames_dropped) if node_status else 0,
        latency_ms=_percentiles(latencies),
        node_latency_ms=_percentiles([s.latency_ms for s in node_status if s.latency_ms > 0]),
        throughput_fps=received / span if span > 0 else float("nan"),
        evaluation=evaluation,
    )


def format_report(report: ReplayReport) -> str:
    lat, node_lat = report.latency_ms, report.node_latency_ms

    def pct(d):
        return "-" if not d.get("count") else f"{d['p50']:.1f} / {d['p90']:.1f} / {d['p99']:.1f}"

    lines = [
        to_markdown(per_sequence_rows([report.evaluation])),
        to_markdown(summary_rows([report.evaluation])),
        f"frames {report.frames}, detections {report.detections}, without detection {report.dropped} "
        f"(node counted {report.node_frames_dropped} dropped), back after the next frame {report.late}",
        f"end-to-end latency p50/p90/p99 ms: {pct(lat)}; in-node latency p50/p90/p99 ms: {pct(node_lat)}",
        f"throughput {report.throughput_fps:.1f} detections/s",
    ]
    return "\n".join(lines) + "\n"


def replay_main(args) -> int:
    """``python -m mixformer_ros.evaluation replay`` (see the CLI for the arguments)."""
    config = ReplayConfig(
        mode=args.mode, node=args.node, camera_topic=args.camera_topic, rate=args.rate,
        publish_clock=args.clock, timeout_s=args.timeout, image_topic=args.image_topic, gt_topic=args.gt_topic,
    )
    rclpy.init()
    try:
        info, record = replay_bag(args.bag, config)
    except (TimeoutError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        rclpy.try_shutdown()
    report = build_report(info, record, args.name, args.invalid)
    sys.stdout.write(format_report(report))
    if args.results is not None:
        write_result(args.results / args.name, report.result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=1, allow_nan=False))
    return 0
