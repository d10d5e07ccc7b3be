"""End-to-end ROS demo: a camera process, the tracker node, and a recording of what it tracked.

    python -m mixformer_ros.demo                       # bundled procedural clip
    python -m mixformer_ros.demo --source video.mp4 --init-box 100,80,60,40
    python -m mixformer_ros.demo --source 0 --init-box 280,200,80,80 --max-frames 300   # camera 0

The tracker node runs in its own process (``python -m mixformer_ros.tracker_node``), exactly as
in a robot. This process plays the camera: it publishes the frames in real time on
``/mixformer_demo/image``, starts the track through ``~/init`` with the stamp of the first
frame, records every Detection2D, and writes an annotated video plus a JSON summary (frames,
fps, end-to-end latency p50/p99, and IoU against the ground truth of the procedural clip).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mixformer_ros.cli_types import non_negative, positive, within
from mixformer_ros.demo_clip import ClipConfig, make_clip
from mixformer_ros.evaluation.metrics import box_iou

log = logging.getLogger("mixformer_ros.demo")

DEMO_MODEL = Path("models") / "demo_tracker.pth.tar"


def default_checkpoint() -> Path | None:
    """The shipped demo model: in the source tree, else in the share folder of the install this
    module was imported from (<prefix>/lib/pythonX.Y/site-packages/mixformer_ros/demo.py), else
    wherever the ROS package index puts the package."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / DEMO_MODEL]
    if len(here.parents) > 4:
        candidates.append(here.parents[4] / "share" / "mixformer_ros" / DEMO_MODEL)
    for path in candidates:
        if path.is_file():
            return path
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("mixformer_ros")) / DEMO_MODEL
    except (ImportError, KeyError, OSError):  # no ROS package index, or the package is not in it
        return None
    return path if path.is_file() else None

NAMESPACE = "/mixformer_demo"
NODE_NAME = "mixformer_tracker"


@dataclass
class Summary:
    source: str
    checkpoint: str
    untrained_weights: bool
    variant: str
    backend: str
    device: str
    frames_published: int
    frames_tracked: int
    frames_dropped_by_node: int
    publish_fps: float
    tracked_fps: float
    latency_ms_p50: float | None  # None: nothing was tracked
    latency_ms_p99: float | None
    latency_ms_max: float | None
    mean_iou: float | None
    success_rate_iou_0_5: float | None
    video: str


# ---------------------------------------------------------------------------- sources


class FrameSource:
    """Frames (BGR) from the procedural clip, a video file or a camera, plus optional truth."""

    def __init__(self, source: str, max_frames: int, seed: int, distractor: bool = True):
        self.truth: np.ndarray | None = None
        self._capture = None
        if source == "synthetic":
            frames, self.truth = make_clip(ClipConfig(num_frames=max_frames, seed=seed, distractor=distractor))
            self._frames = iter(frames)
            self.fps = None
        else:
            target = int(source) if source.isdigit() else source
            if isinstance(target, str) and not Path(target).is_file():
                raise SystemExit(f"video file not found: {target}")
            self._capture = cv2.VideoCapture(target)
            if not self._capture.isOpened():
                raise SystemExit(f"cannot open {'camera' if isinstance(target, int) else 'video'} {source}")
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 1 <= fps <= 240 else None
        self.max_frames = max_frames

    def __iter__(self):
        for index in range(self.max_frames):
            if self._capture is None:
                frame = next(self._frames, None)
            else:
                ok, frame = self._capture.read()
                frame = frame if ok else None
            if frame is None:
                return
            yield index, frame

    def close(self):
        if self._capture is not None:
            self._capture.release()


# ---------------------------------------------------------------------------- ROS side


class DemoCamera:
    """The demo's ROS participant: camera publisher, ~/init client, detection recorder."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from mixformer_ros.msg import TrackerStatus
        from mixformer_ros.srv import InitTracker
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2D

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mixformer_demo_camera", context=self.context)
        base = f"{NAMESPACE}/{NODE_NAME}"
        self.pub = self.node.create_publisher(
            Image, f"{NAMESPACE}/image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.lock = threading.Lock()
        self.detections: dict[int, tuple[float, object]] = {}  # stamp ns -> (receipt time, msg)
        self.last_status = None
        self.node.create_subscription(Detection2D, f"{base}/detection", self._on_detection, 100)
        self.node.create_subscription(TrackerStatus, f"{base}/status", self._on_status, 100)
        self.init_client = self.node.create_client(InitTracker, f"{base}/init")
        self._InitTracker = InitTracker
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._running = True
        self._spin.start()

    def _spin_loop(self):
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_detection(self, msg):
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.detections[stamp_ns] = (time.monotonic(), msg)

    def _on_status(self, msg):
        with self.lock:
            self.last_status = msg

    def publish(self, frame_bgr: np.ndarray, stamp_ns: int) -> None:
        from mixformer_ros.ros.conversions import rgb_to_image
        from std_msgs.msg import Header

        header = Header(frame_id="demo_camera_optical")
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.pub.publish(rgb_to_image(frame_bgr, header, encoding="bgr8"))

    def init(self, box, stamp_ns: int, timeout: float = 30.0):
        req = self._InitTracker.Request()
        x, y, w, h = (int(round(v)) for v in box)
        req.roi.x_offset, req.roi.y_offset, req.roi.width, req.roi.height = x, y, w, h
        req.stamp.sec, req.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        req.label = "target"
        future = self.init_client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise RuntimeError("the tracker node did not answer ~/init")
        return future.result()

    def close(self):
        self._running = False
        self._spin.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


# ---------------------------------------------------------------------------- main flow


def _start_node(args, checkpoint: str, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "mixformer_ros.tracker_node", "--ros-args",
        "-r", f"__ns:={NAMESPACE}",
        "-p", f"variant:={args.variant}",
        "-p", f"backend:={args.backend}",
        "-p", f"device:={args.device}",
        "-p", f"preset:={args.preset}",
        "-p", f"size_update_rate:={args.size_update_rate}",
        "-p", f"frame_buffer_size:={args.buffer}",
    ]
    # rcl cannot parse an empty value (`-p checkpoint:=`), so empty paths are left at their default.
    if checkpoint:
        cmd += ["-p", f"checkpoint:={checkpoint}"]
    if args.onnx_model:
        cmd += ["-p", f"onnx_model:={Path(args.onnx_model).resolve()}"]
    log_file = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)


def _wait_for_node(camera: DemoCamera, node: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            lines = log_path.read_text().splitlines()
            # The reason comes first, whole (a shape mismatch lists every tensor); then how the log ends.
            errors = [line[:600] + (" ..." if len(line) > 600 else "") for line in lines if "ERROR" in line][:3]
            raise SystemExit(f"the tracker node exited with code {node.returncode}:\n" + "\n".join(errors + ["..."] + lines[-10:])
                             + f"\n(whole log: {log_path})")
        if camera.init_client.wait_for_service(timeout_sec=0.5) and camera.pub.get_subscription_count() > 0:
            return
    raise SystemExit(f"the tracker node did not come up within {timeout:.0f}s (log: {log_path})")


def _init_on_first_frame(camera: DemoCamera, frame: np.ndarray, box, stamp_ns: int) -> str:
    """Publish the first frame until the node has it, then start the track on it by stamp."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        camera.publish(frame, stamp_ns)
        reply = camera.init(box, stamp_ns)
        if reply.success:
            return reply.track_id
        if "newer than the newest" not in reply.message and "no image" not in reply.message:
            raise SystemExit(f"the node refused the initial box: {reply.message}")
        time.sleep(0.1)
    raise SystemExit("the first frame never reached the tracker node")


def _write_video(path: Path, frames, fps: float, draw) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        path = path.with_suffix(".avi")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path}")
    for index, frame in enumerate(tqdm(frames, desc="writing video", unit="frame")):
        writer.write(draw(index, frame.copy()))
    writer.release()
    return path


def _pixel_box(text: str) -> list[float]:
    """--init-box: four numbers x,y,w,h with the corner in the image (a RegionOfInterest is unsigned)."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or min(box[:2]) < 0 or min(box[2:]) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected four finite numbers x,y,w,h with x, y >= 0 and w, h > 0, got {text!r}")
    return box


def _node_range(name: str):
    """An argparse type for a value passed on to the node parameter ``name``: its declared range."""
    from mixformer_ros.ros.parameters import PARAMETERS

    spec = next(p for p in PARAMETERS if p.name == name)
    return within(type(spec.default), *(spec.float_range or spec.int_range))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default="synthetic", help="'synthetic' (procedural clip), a video file, or a camera index")
    p.add_argument("--init-box", type=_pixel_box,
                   help="x,y,w,h of the target in the first frame (required unless --source synthetic)")
    p.add_argument("--max-frames", type=positive(int), default=150,
                   help="frames to play (the procedural clip spreads its path over them: fewer frames, faster motion)")
    p.add_argument("--fps", type=non_negative(float), default=0.0, help="publishing rate; 0 = the video's rate, 15 for the clip")
    p.add_argument("--seed", type=int, default=7, help="seed of the procedural clip")
    p.add_argument("--no-distractor", action="store_true", help="procedural clip without the distractor square")
    p.add_argument("--variant", default="auto", choices=["S", "B", "auto"],
                   help="network shape; auto = as recorded in the checkpoint (S without one)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"], help="inference backend of the node")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--checkpoint",
        default=None,
        help=f"checkpoint; default the shipped {DEMO_MODEL} when found; 'none' = untrained weights",
    )
    p.add_argument("--onnx-model", default="",
                   help="ONNX export folder for --backend onnxruntime; with --checkpoint none it brings the weights")
    p.add_argument("--preset", default="demo", help="tracker preset of the node")
    p.add_argument("--size-update-rate", type=_node_range("size_update_rate"), default=1.0,
                   help="size_update_rate of the node: 1 = the official tracker, < 1 damps size changes")
    p.add_argument("--buffer", type=_node_range("frame_buffer_size"), default=30, help="frame_buffer_size of the node")
    p.add_argument("--output-dir", type=Path, default=Path("outputs"), help="created in the current folder")
    p.add_argument("--node-timeout", type=positive(float), default=180.0, help="seconds to wait for the node to load its model")
    return p.parse_args(argv)


def _resolve_checkpoint(args) -> str:
    if args.checkpoint == "none":
        return ""
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise SystemExit(f"checkpoint not found: {args.checkpoint}")
        return str(Path(args.checkpoint).resolve())
    shipped = default_checkpoint()
    return str(shipped) if shipped else ""


def _untrained(args, checkpoint: str) -> bool:
    """No weights at all: neither a checkpoint nor an ONNX export that brings its own."""
    return not checkpoint and not (args.backend == "onnxruntime" and args.onnx_model)


def _loud_untrained_warning() -> None:
    bar = "!" * 78
    log.warning(
        "\n%s\n!!  NO CHECKPOINT: the demo runs MixFormerV2 with UNTRAINED random weights.\n"
        "!!  The boxes will not follow the target. Pass --checkpoint (by default the demo\n"
        "!!  takes the shipped %s when it finds it).\n%s",
        bar, DEMO_MODEL, bar,
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    args = parse_args(argv)
    if args.source != "synthetic" and not args.init_box:
        raise SystemExit("--init-box x,y,w,h is required for a video file or a camera")
    checkpoint = _resolve_checkpoint(args)
    if _untrained(args, checkpoint):
        _loud_untrained_warning()

    # Keep the demo's DDS traffic on this machine unless the user chose otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    node_log = args.output_dir / "demo_node.log"
    source = FrameSource(args.source, args.max_frames, args.seed, distractor=not args.no_distractor)
    fps = args.fps or source.fps or 15.0

    node = _start_node(args, checkpoint, node_log)
    camera = None
    frames: list[np.ndarray] = []
    publish_times: dict[int, float] = {}
    try:
        camera = DemoCamera()
        log.info("waiting for the tracker node (model loading; log: %s)", node_log)
        _wait_for_node(camera, node, node_log, args.node_timeout)

        period_ns = int(1e9 / fps)
        t_start = time.monotonic()
        for index, frame in tqdm(source, total=args.max_frames, desc="publishing", unit="frame"):
            stamp_ns = 1_000_000_000 + index * period_ns
            frames.append(frame)
            if index == 0:
                box = source.truth[0] if source.truth is not None else args.init_box
                track_id = _init_on_first_frame(camera, frame, box, stamp_ns)
                log.info("tracking started: track id %s", track_id)
                t_start = time.monotonic()
            else:
                # Real-time pacing: a slow node drops stale frames instead of queueing them.
                delay = t_start + index / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                publish_times[stamp_ns] = time.monotonic()
                camera.publish(frame, stamp_ns)
        t_end = time.monotonic()
        last = max(publish_times) if publish_times else None
        deadline = time.monotonic() + 5.0
        while last is not None and time.monotonic() < deadline:
            with camera.lock:
                if last in camera.detections:
                    break
            time.sleep(0.05)
        time.sleep(0.3)
        with camera.lock:
            detections = dict(camera.detections)
            status = camera.last_status
    finally:
        if camera is not None:
            camera.close()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
        source.close()

    return _report(args, checkpoint, fps, frames, publish_times, detections, status, source.truth, t_end - t_start)


def _report(args, checkpoint, fps, frames, publish_times, detections, status, truth, duration) -> int:
    from mixformer_ros.ros.conversions import detection_to_xywh
    from mixformer_ros.ros.drawing import STATE_COLOURS, draw_banner, draw_box

    period_ns = int(1e9 / fps)
    stamps = [1_000_000_000 + i * period_ns for i in range(len(frames))]
    latencies = np.array(
        [(detections[s][0] - publish_times[s]) * 1000.0 for s in publish_times if s in detections]
    )
    boxes: list[list[float] | None] = [None] * len(frames)
    scores: list[float | None] = [None] * len(frames)
    for i, s in enumerate(stamps):
        if s in detections:
            msg = detections[s][1]
            boxes[i] = detection_to_xywh(msg)
            scores[i] = msg.results[0].hypothesis.score
    tracked = sum(b is not None for b in boxes[1:])

    mean_iou = success = None
    if truth is not None and tracked:
        idx = [i for i in range(1, len(frames)) if boxes[i] is not None]
        ious = box_iou(np.array([boxes[i] for i in idx]), truth[idx])
        mean_iou, success = float(ious.mean()), float((ious > 0.5).mean())

    held: list[float] | None = None

    def draw(index, image):
        nonlocal held
        marks = []  # (box, caption, colour, thickness), drawn after the banner so it hides no caption
        if truth is not None:
            marks.append((truth[index], "", STATE_COLOURS["TRUTH"], 1))
        if index == 0 and len(frames):
            box = truth[0] if truth is not None else args.init_box
            marks.append((box, "init", STATE_COLOURS["TRACKING"], 2))
            held = list(box)
            text = "frame 0: initialised"
        elif boxes[index] is not None:
            held = boxes[index]
            marks.append((held, f"{scores[index]:.2f}", STATE_COLOURS["TRACKING"], 2))
            lat = (detections[stamps[index]][0] - publish_times[stamps[index]]) * 1000.0
            text = f"frame {index}: tracked, latency {lat:.0f} ms"
        else:
            if held is not None:
                marks.append((held, "stale", STATE_COLOURS["IDLE"], 1))
            text = f"frame {index}: dropped by the node (newer frame first)"
        if not checkpoint:
            text += "  [UNTRAINED WEIGHTS]"
        draw_banner(image, text, bgr=True)
        for box, caption, colour, thickness in marks:
            draw_box(image, box, caption, colour, bgr=True, thickness=thickness)
        return image

    video = _write_video(args.output_dir / "demo_tracking.mp4", frames, fps, draw) if frames else None
    pct = (lambda q: round(float(np.percentile(latencies, q)), 2)) if latencies.size else (lambda q: None)
    untrained = _untrained(args, checkpoint)
    summary = Summary(
        source=args.source,
        checkpoint=checkpoint or ("(none: untrained weights)" if untrained else "(none: weights from the ONNX export)"),
        untrained_weights=untrained,
        variant=args.variant,
        backend=args.backend,
        device=args.device,
        frames_published=len(frames),
        frames_tracked=tracked,
        frames_dropped_by_node=int(status.frames_dropped) if status is not None else -1,
        publish_fps=round(fps, 2),
        tracked_fps=round(tracked / duration, 2) if duration > 0 else 0.0,
        latency_ms_p50=pct(50),
        latency_ms_p99=pct(99),
        latency_ms_max=round(float(latencies.max()), 2) if latencies.size else None,
        mean_iou=None if mean_iou is None else round(mean_iou, 4),
        success_rate_iou_0_5=None if success is None else round(success, 4),
        video=str(video) if video else "",
    )
    out = args.output_dir / "demo_summary.json"
    out.write_text(json.dumps(asdict(summary), indent=2) + "\n")
    width = max(len(k) for k in asdict(summary))
    print("\nMixFormerV2 ROS demo summary")
    for key, value in asdict(summary).items():
        print(f"  {key:<{width}}  {value}")
    print(f"  (written to {out})")
    if untrained:
        _loud_untrained_warning()
    return 0 if tracked else 1


if __name__ == "__main__":
    sys.exit(main())
