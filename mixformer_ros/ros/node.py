"""The ``mixformer_tracker`` lifecycle node: camera frames in, one tracked box per frame out.

Threading: the image callback only decodes a frame and puts it into the frame buffer; a
worker thread (not an executor thread) runs the network on the newest frame and skips the
stale ones, so a slow backend never builds a queue. Because the network never runs on the
executor, one executor thread serves images, services, parameters and timers, and they answer
while inference runs (a service that needs the tracker waits at most for the frame in hand).
All tracker state is guarded by one lock, held by the worker for one frame at a time.

The worker is the only thread that runs the network: loading the model (configure, activate)
and initialising a track (``~/init``) are handed to it and waited for. PyTorch's CPU kernels run
on an OpenMP team that belongs to the calling thread; when loading and initialisation ran on
executor threads and tracking on the worker, the process held several teams and each S tracking
step on a 2-core machine took 37 instead of 29 ms (docs/node.md, Latency).

Lifecycle: configure loads the model (a missing or corrupt file fails the transition),
activate subscribes and lets the worker track, deactivate stops tracking and frees the model and
the buffered frames (activate loads the model again), cleanup removes publishers and services,
shutdown ends the worker.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2D

from mixformer_ros.msg import TrackerStatus
from mixformer_ros.ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    make_detection,
    rgb_to_image,
    roi_to_xywh,
    stamp_to_ns,
)
from mixformer_ros.ros.drawing import STATE_COLOURS, draw_banner, draw_box
from mixformer_ros.ros.frame_buffer import Frame, FrameBuffer
from mixformer_ros.ros.parameters import NodeSettings, check_choices, declare_all, read_settings
from mixformer_ros.ros.qos import (
    fixed_profile,
    offered_reliabilities,
    profile_for,
    reliability_for_publishers,
)
from mixformer_ros.ros.serialized import read_compressed_image, read_image
from mixformer_ros.srv import InitTracker

STATE_NAMES = {TrackerStatus.IDLE: "IDLE", TrackerStatus.TRACKING: "TRACKING", TrackerStatus.LOST: "LOST"}

# The 1 Hz diagnostics: latency percentiles over the last frames, rates over the last seconds
# (enough arrival times kept for cameras up to _MAX_RATE_HZ).
_LATENCY_WINDOW = 120
_SERVICE_QUEUE_DEPTH = 100
_RATE_WINDOW_S = 5.0
_MAX_RATE_HZ = 400
# Longest wait at cleanup for subscribers to acknowledge the last outputs.
_FLUSH_TIMEOUT_S = 1.0


@dataclass
class Track:
    """The current track: who it is and how far through the frame stream it got."""

    track_id: str
    label: str
    last_seq: int  # sequence number of the last frame the tracker consumed
    catch_up_until: int  # frames up to this one are tracked in order, none skipped
    state: int = TrackerStatus.TRACKING
    low_score_frames: int = 0
    score: float = 1.0


def _logged_transition(method):
    """rclpy turns an exception in a transition into ERROR without a word; log it first."""

    @functools.wraps(method)
    def wrapper(self, state):
        try:
            return method(self, state)
        except Exception:
            if self.context.ok():
                self.get_logger().error(f"{method.__name__} raised:\n{traceback.format_exc()}")
            else:  # Ctrl-C/SIGTERM shut rclpy down under it: nothing went wrong
                self.get_logger().info(f"{method.__name__} interrupted by shutdown")
            return TransitionCallbackReturn.ERROR

    return wrapper


def _new_track_id() -> str:
    return uuid.uuid4().hex[:12]


class TrackerNode(LifecycleNode):
    """MixFormerV2 single-object tracker as a ROS 2 lifecycle node."""

    def __init__(self, node_name: str = "mixformer_tracker", **kwargs):
        super().__init__(node_name, **kwargs)
        declare_all(self)
        self.settings: NodeSettings = read_settings(self)

        self._images_group = MutuallyExclusiveCallbackGroup()
        self._services_group = ReentrantCallbackGroup()
        self._timers_group = MutuallyExclusiveCallbackGroup()

        self._state_lock = threading.Lock()  # tracker, track, processed/dropped counters
        self._tracker = None
        self._track: Track | None = None
        self._buffer: FrameBuffer | None = None
        self._new_frame = threading.Event()  # wakes the worker: a new frame or a job
        self._stop_worker = threading.Event()
        self._worker: threading.Thread | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (callable, Future) run by the worker
        self._active = False

        self._sub = None
        self._sub_reliability: ReliabilityPolicy | None = None
        self._output_pubs: list = []
        self._service_handles: list = []
        self._timer_handles: list = []  # while active: the QoS re-check
        self._diagnostics_timer = None  # while configured, active or not

        self._processed = 0
        self._dropped = 0
        self._rejected = 0
        self._repeated = 0  # frames ignored because they repeat the newest frame's stamp
        self._received = 0
        self._last_message = ""
        self._latencies_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._processed_times: deque[float] = deque(maxlen=int(_RATE_WINDOW_S * _MAX_RATE_HZ))
        self._received_times: deque[float] = deque(maxlen=int(_RATE_WINDOW_S * _MAX_RATE_HZ))
        # The worker appends to the latency and processed-time windows while the diagnostics timer
        # reads them; a lock of their own, so the timer never waits for an inference.
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.settings = read_settings(self)
        problems = check_choices(self.settings)
        if problems:
            for p in problems:
                self.get_logger().error(f"bad parameter: {p}")
            return TransitionCallbackReturn.FAILURE
        if not self._on_worker(self._load_model):
            return TransitionCallbackReturn.FAILURE
        self._buffer = FrameBuffer(self.settings.frame_buffer_size)

        self._det_pub = self.create_publisher(Detection2D, "~/detection", 10)
        self._status_pub = self.create_publisher(TrackerStatus, "~/status", 10)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", 2)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._output_pubs = [self._det_pub, self._status_pub, self._debug_pub, self._diag_pub]
        # Also while inactive: a monitor should see "inactive", not a node gone stale.
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=self._timers_group)
        # Requests queue while an init waits for the frame in hand: deeper than the default 10,
        # so a burst from several clients is answered rather than silently dropped.
        service_qos = QoSProfile(depth=_SERVICE_QUEUE_DEPTH)
        self._service_handles = [
            self.create_service(InitTracker, "~/init", self._on_init, qos_profile=service_qos,
                                callback_group=self._services_group),
            self.create_service(Trigger, "~/stop", self._on_stop, qos_profile=service_qos,
                                callback_group=self._services_group),
        ]
        tracking = self._tracker.settings
        self.get_logger().info(
            f"configured: MixFormerV2 ({self.settings.variant}) on {self.settings.backend}/{self.settings.device} "
            f"in {self.settings.precision}, preset {self.settings.preset}: search factor {tracking.search_factor:g}, "
            f"template factor {tracking.template_factor:g}, update interval {tracking.update_interval}, "
            f"size update rate {tracking.size_update_rate:g}"
        )
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._tracker is None and not self._on_worker(self._load_model):
            return TransitionCallbackReturn.FAILURE
        self._subscribe(self._initial_reliability())
        if self.settings.qos == "auto":
            self._timer_handles = [self.create_timer(1.0, self._recheck_qos, callback_group=self._timers_group)]
        self._active = True
        self.get_logger().info(f"active: listening on {self._sub.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False  # the worker finishes the frame in hand (under the lock) and stops tracking
        self._stop_input()
        with self._state_lock:
            self._track = None
            self._release_model()
        if self._buffer is not None:
            self._buffer.clear()
        self._publish_status(None, "deactivated: model and buffered frames released")
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        with self._state_lock:
            self._release_model()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker_thread()
        self._destroy_interfaces()
        with self._state_lock:
            self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def stop(self) -> None:
        """Stop the inference thread; for main() on Ctrl-C, whatever the lifecycle state."""
        self._active = False
        self._stop_worker_thread()

    def _load_model(self) -> bool:
        # Imported here: an unconfigured lifecycle node starts without loading torch.
        from mixformer_ros.tracking import build_tracker

        s = self.settings
        overrides = {"size_update_rate": s.size_update_rate}
        if s.search_factor > 0:
            overrides["search_factor"] = s.search_factor
        if s.update_interval > 0:
            overrides["update_interval"] = s.update_interval
        if not s.checkpoint and not self._weights_from_onnx():
            self.get_logger().warning(
                "NO CHECKPOINT: the 'checkpoint' parameter is empty, so MixFormerV2 runs with UNTRAINED "
                "random weights and its boxes are meaningless. Pass checkpoint:=/path/to/model.pth.tar."
            )
        backend_options = {"onnx_model": s.onnx_model} if s.backend == "onnxruntime" and s.onnx_model else None
        try:
            self._tracker = build_tracker(
                variant=self._variant_argument(),
                checkpoint=s.checkpoint or None,
                backend=s.backend,
                device=s.device,
                precision=s.precision,
                preset=s.preset,
                num_threads=s.num_threads or None,
                backend_options=backend_options,
                **overrides,
            )
        except Exception as exc:  # any failure here means "cannot run": report it, do not crash
            self.get_logger().error(f"cannot load the tracker model: {type(exc).__name__}: {exc}")
            self._tracker = None
            return False
        return True

    def _weights_from_onnx(self) -> bool:
        """An ONNX-only deployment: the export folder brings the weights and the network shape."""
        return self.settings.backend == "onnxruntime" and bool(self.settings.onnx_model)

    def _variant_argument(self) -> str | None:
        """None lets the checkpoint (or the ONNX export) decide the network shape; 'auto' without one means S."""
        if self.settings.variant != "auto":
            return self.settings.variant
        return None if self.settings.checkpoint or self._weights_from_onnx() else "S"

    def _release_model(self) -> None:
        self._tracker = None
        if self.settings.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _stop_input(self) -> None:
        """Drop the image subscription and the QoS re-check timer."""
        for timer in self._timer_handles:
            self.destroy_timer(timer)
        self._timer_handles = []
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None

    def _destroy_interfaces(self) -> None:
        self._stop_input()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        # A reliable writer deleted with unacknowledged samples drops them: let the last detection and
        # status (a stop, a deactivation) reach the subscribers first, for at most a second in all.
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        for pub in self._output_pubs:
            if self.context.ok():
                pub.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
            self.destroy_publisher(pub)
        self._output_pubs = []
        for srv in self._service_handles:
            self.destroy_service(srv)
        self._service_handles = []

    def _stop_worker_thread(self) -> None:
        if self._worker is not None:
            self._stop_worker.set()
            self._new_frame.set()
            self._worker.join()
            self._worker = None
        self._fail_pending_jobs()

    def _fail_pending_jobs(self) -> None:
        while not self._jobs.empty():  # nobody will run these: let their callers go
            _, future = self._jobs.get()
            future.set_exception(RuntimeError("the node is shutting down"))

    def _on_worker(self, fn):
        """Run ``fn`` on the inference thread (started on first use) and return its result."""
        if threading.current_thread() is self._worker:
            return fn()
        if self._worker is None:
            self._stop_worker.clear()
            self._worker = threading.Thread(target=self._worker_loop, name="mixformer_inference", daemon=True)
            self._worker.start()
        worker = self._worker
        future = Future()
        self._jobs.put((fn, future))
        self._new_frame.set()
        while True:
            try:
                return future.result(timeout=0.5)
            except FutureTimeout:
                if not worker.is_alive():  # it ended (shutdown) without getting to this job
                    raise RuntimeError("the node is shutting down") from None

    # ------------------------------------------------------------------ input

    def _image_topic(self) -> str:
        return "image/compressed" if self.settings.compressed else "image"

    def _initial_reliability(self) -> ReliabilityPolicy:
        if self.settings.qos != "auto":
            return fixed_profile(self.settings.qos).reliability
        topic = self.resolve_topic_name(self._image_topic())
        return reliability_for_publishers(offered_reliabilities(self, topic))

    def _subscribe(self, reliability: ReliabilityPolicy) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        msg_type = CompressedImage if self.settings.compressed else Image
        callback = self._on_compressed if self.settings.compressed else self._on_image
        depth = self.settings.frame_buffer_size
        if self.settings.qos == "auto":
            qos = profile_for(reliability, depth)
        else:
            qos = fixed_profile(self.settings.qos, depth)
        events = None
        if self.settings.qos == "auto":
            # Replaces rclpy's "no messages will be received" warning: the 1 Hz check re-subscribes.
            events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        # raw: the callback gets the serialized bytes and reads only what it needs (serialized.py).
        self._sub = self.create_subscription(
            msg_type, self._image_topic(), callback, qos,
            callback_group=self._images_group, event_callbacks=events, raw=True,
        )
        self._sub_reliability = qos.reliability

    def _recheck_qos(self) -> None:
        """qos=auto: follow the publishers' reliability when they come, go or change."""
        wanted = reliability_for_publishers(offered_reliabilities(self, self._sub.topic_name))
        if wanted != self._sub_reliability:
            self.get_logger().info(
                f"publishers on {self._sub.topic_name} changed: subscribing {wanted.name.lower()}"
            )
            self._subscribe(wanted)

    def _on_incompatible_qos(self, event) -> None:
        self.get_logger().info("a publisher with other QoS appeared; auto QoS re-subscribes within a second")

    def _on_image(self, serialized: bytes) -> None:
        self._accept(serialized, read_image, image_to_rgb)

    def _on_compressed(self, serialized: bytes) -> None:
        self._accept(serialized, read_compressed_image, compressed_to_rgb)

    def _accept(self, serialized: bytes, read, decode) -> None:
        arrival = time.monotonic()
        try:
            msg = read(serialized)
        except ImageConversionError as exc:
            self._received += 1
            self._received_times.append(arrival)
            self._reject(None, f"frame rejected: {exc}")  # no header to copy: stamped now
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if self._buffer.is_repeat(stamp_ns):
            # A re-sent frame, or a driver whose clock stands still: frames are told apart by stamp.
            self._repeated += 1
            self.get_logger().warning(
                f"ignoring frames that repeat the newest stamp ({stamp_ns} ns; {self._repeated} so far): "
                "a re-sent frame, or a camera whose header.stamp does not advance", throttle_duration_sec=5.0)
            return
        self._received += 1
        self._received_times.append(arrival)
        try:
            rgb = decode(msg)
        except ImageConversionError as exc:
            self._reject(msg.header, f"frame rejected: {exc}")
            return
        self._buffer.push(stamp_ns, msg.header, rgb, arrival)
        self._new_frame.set()

    def _reject(self, header, reason: str) -> None:
        # Only this callback (one callback group, one at a time) touches the counter, so no lock:
        # taking the tracker lock here would stall image intake for a whole inference.
        self._rejected += 1
        self._last_message = reason
        self.get_logger().warning(reason, throttle_duration_sec=5.0)
        self._publish_status(header, reason)

    # ------------------------------------------------------------------ inference

    def _worker_loop(self) -> None:
        while not self._stop_worker.is_set():
            self._new_frame.wait(timeout=0.1)
            self._new_frame.clear()
            try:
                self._run_jobs()
                while not self._stop_worker.is_set() and self._active and self._step():
                    self._run_jobs()
            except Exception:
                if not self.context.ok():  # Ctrl-C/SIGTERM shut rclpy down under a frame in hand
                    break
                # Anything else must not end inference (and hang ~/init) for the node's life.
                self.get_logger().error(f"inference thread error, carrying on:\n{traceback.format_exc()}")
        self._fail_pending_jobs()

    def _run_jobs(self) -> None:
        while not self._jobs.empty():
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, which reports it
                future.set_exception(exc)

    def _next_frame(self, track: Track) -> Frame | None:
        """Oldest unprocessed frame while catching up after init, otherwise the newest one."""
        pending = self._buffer.after(track.last_seq)
        if not pending:
            return None
        if pending[0].seq <= track.catch_up_until:
            return pending[0]
        return pending[-1]

    def _step(self) -> bool:
        """Track one frame; False when there is nothing to do."""
        with self._state_lock:
            track = self._track
            if track is None or self._tracker is None:
                return False
            frame = self._next_frame(track)
            if frame is None:
                return False
            # Frames between the last processed one and this one will never be tracked.
            self._dropped += frame.seq - track.last_seq - 1
            track.last_seq = frame.seq
            failure = ""
            try:
                # A camera that switched resolution is refused here too (ValueError): the box is in the
                # pixels of the size the track started on.
                result = self._tracker.track(frame.rgb)
            except Exception as exc:  # a backend failure must not kill the node or its state
                failure = f"frame not tracked: {type(exc).__name__}: {exc}"
            if failure:
                self._last_message = failure
                self.get_logger().error(failure, throttle_duration_sec=5.0)
                self._publish_status(frame.header, failure, track=track)
                return True
            latency_ms = (time.monotonic() - frame.arrival) * 1000.0
            self._processed += 1
            with self._stats_lock:
                self._latencies_ms.append(latency_ms)
                self._processed_times.append(time.monotonic())
            message = self._update_state(track, result.score)
            box, score = list(result.box), float(result.score)
            # Published under the lock: a ~/stop, ~/init or deactivate that comes meanwhile waits,
            # so no TRACKING status follows their own and no publisher is destroyed under us.
            self._det_pub.publish(make_detection(frame.header, box, score, track.label, track.track_id))
            self._publish_status(frame.header, message, track=track, latency_ms=latency_ms)
            # Drawing and sending a full frame costs a few ms of a small CPU: only when someone watches.
            if self.get_parameter("publish_debug_image").value and self._debug_pub.get_subscription_count():
                self._publish_debug(frame, box, score, track)
        return True

    def _update_state(self, track: Track, score: float) -> str:
        """LOST after `lost_patience` frames under `lost_threshold`; back to TRACKING above it."""
        threshold = self.get_parameter("lost_threshold").value
        patience = self.get_parameter("lost_patience").value
        track.score = score
        if score < threshold:
            track.low_score_frames += 1
            if track.state == TrackerStatus.TRACKING and track.low_score_frames >= patience:
                track.state = TrackerStatus.LOST
                self._last_message = (
                    f"target lost: score under {threshold:.2f} for {track.low_score_frames} frames"
                )
                self.get_logger().info(self._last_message)
                return self._last_message
        else:
            track.low_score_frames = 0
            if track.state == TrackerStatus.LOST:
                track.state = TrackerStatus.TRACKING
                self._last_message = f"target recovered: score {score:.2f}"
                self.get_logger().info(self._last_message)
                return self._last_message
        return ""

    # ------------------------------------------------------------------ services

    def _on_init(self, request: InitTracker.Request, response: InitTracker.Response) -> InitTracker.Response:
        response.success = False
        response.track_id = ""
        if not self._active:
            response.message = "refused: the node is not active (lifecycle state must be active)"
            return response
        newest = self._buffer.newest()
        if newest is None:
            response.message = f"refused: no image received yet on {self.resolve_topic_name(self._image_topic())}"
            return response
        stamp_ns = stamp_to_ns(request.stamp)
        frame = newest if stamp_ns == 0 else self._buffer.find(stamp_ns)
        if frame is None:
            response.message = "refused: " + self._describe_missing(stamp_ns)
            return response
        try:
            box = roi_to_xywh(request.roi, frame.width, frame.height)
        except ValueError as exc:
            response.message = f"refused: {exc}"
            return response

        try:
            track, response.message = self._on_worker(
                functools.partial(self._start_track, frame, box, request.label or "object"))
        except RuntimeError as exc:  # the worker stopped before it got to the request
            response.message = f"refused: {exc}"
            return response
        if track is None:
            return response
        self._publish_status(frame.header, response.message, track=track)
        self._new_frame.set()
        response.success = True
        response.track_id = track.track_id
        self.get_logger().info(response.message)
        return response

    def _start_track(self, frame: Frame, box, label: str) -> tuple[Track | None, str]:
        """Initialise the tracker on ``frame`` (on the inference thread); the new track and a message."""
        with self._state_lock:
            if self._tracker is None:
                return None, "refused: no model loaded"
            try:
                self._tracker.initialize(frame.rgb, box)
            except Exception as exc:  # the tracker state is unknown now: say so and go idle
                self._track = None
                self._last_message = f"initialisation failed, tracker is idle: {type(exc).__name__}: {exc}"
                return None, self._last_message
            newest = self._buffer.newest()
            self._track = Track(
                track_id=_new_track_id(),
                label=label,
                last_seq=frame.seq,
                catch_up_until=newest.seq if newest is not None else frame.seq,
            )
            behind = self._track.catch_up_until - frame.seq
            self._last_message = (
                f"tracking '{label}' as {self._track.track_id} from frame {frame.stamp_ns} ns; "
                f"catching up {behind} buffered frame(s)"
            )
            return self._track, self._last_message

    def _describe_missing(self, stamp_ns: int) -> str:
        span = self._buffer.stamp_range()
        if span is None:
            return "no buffered frames"
        oldest, newest = span
        if stamp_ns < oldest:
            return (
                f"stamp {stamp_ns} ns is older than the oldest buffered frame ({oldest} ns); "
                f"the buffer holds {len(self._buffer)} of at most {self._buffer.capacity} frames (frame_buffer_size)"
            )
        if stamp_ns > newest:
            return f"stamp {stamp_ns} ns is newer than the newest frame received ({newest} ns)"
        return f"no buffered frame has stamp {stamp_ns} ns (buffer spans {oldest}..{newest} ns)"

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._state_lock:
            track, self._track = self._track, None
            self._last_message = f"stopped track {track.track_id}" if track else "already idle"
        self._publish_status(None, self._last_message)
        response.success = True
        response.message = self._last_message
        return response

    # ------------------------------------------------------------------ outputs

    def _publish_status(self, header, message: str, track: Track | None = None, latency_ms: float = 0.0) -> None:
        if not self._output_pubs:
            return
        msg = TrackerStatus()
        if header is not None:
            msg.header = header
        else:
            msg.header.stamp = self.get_clock().now().to_msg()
        if track is None:
            track = self._track
        if track is not None:
            msg.state = track.state
            msg.track_id = track.track_id
            msg.label = track.label
            msg.score = float(track.score)
        else:
            msg.state = TrackerStatus.IDLE
        msg.latency_ms = float(latency_ms)
        msg.frames_processed = self._processed
        msg.frames_dropped = self._dropped
        msg.frames_rejected = self._rejected
        msg.backend = self.settings.backend
        msg.device = self.settings.device
        msg.precision = self.settings.precision
        msg.message = message
        self._status_pub.publish(msg)

    def _publish_debug(self, frame: Frame, box, score: float, track: Track) -> None:
        canvas = np.array(frame.rgb)  # writable copy; the buffered frame stays untouched
        state = STATE_NAMES[track.state]
        draw_banner(canvas, f"{state} {track.track_id}  dropped {self._dropped}")
        draw_box(canvas, box, f"{track.label} {score:.2f}", STATE_COLOURS[state])
        self._debug_pub.publish(rgb_to_image(canvas, frame.header))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()

        def rate(times: list[float]) -> float:
            return sum(1 for t in times if now - t <= _RATE_WINDOW_S) / _RATE_WINDOW_S

        with self._stats_lock:
            latencies, processed_times = list(self._latencies_ms), list(self._processed_times)
        lat = np.array(latencies) if latencies else np.zeros(1)
        track = self._track
        state = (STATE_NAMES[track.state] if track else "IDLE") if self._active else "INACTIVE"
        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: tracker"
        status.hardware_id = f"{self.settings.backend}/{self.settings.device}/{self.settings.precision}"
        if state == "LOST":
            status.level, status.message = DiagnosticStatus.WARN, "target lost"
        else:
            status.level, status.message = DiagnosticStatus.OK, state.lower()
        values = {
            "state": state,
            "track_id": track.track_id if track else "",
            "input_rate_hz": f"{rate(list(self._received_times)):.2f}",  # this thread appends to it
            "processed_rate_hz": f"{rate(processed_times):.2f}",
            "latency_ms_p50": f"{float(np.percentile(lat, 50)):.2f}",
            "latency_ms_max": f"{float(lat.max()):.2f}",
            "frames_received": str(self._received),
            "frames_processed": str(self._processed),
            "frames_dropped": str(self._dropped),
            "frames_rejected": str(self._rejected),
            "frames_with_repeated_stamp": str(self._repeated),
            "subscription_reliability": self._sub_reliability.name.lower() if self._sub_reliability else "",
            "last_message": self._last_message,
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)


def spin_node(node) -> None:
    """Spin ``node`` on one executor thread (the tracker node, or bench/echo_node.py's stand-in).

    rclpy's MultiThreadedExecutor re-polls tasks it has handed to its pool but that have not
    started yet, holding the GIL (ros2/rclpy#1452, #1223). On 2 cores that starved the inference
    thread and the DDS receive threads: frames arrived up to a second late, and with PyTorch a
    15 Hz camera got 65 of 100 frames tracked instead of 100 (docs/node.md, Latency). The callback
    groups still keep images apart from services for users who spin the node on their own executor.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    finally:
        executor.shutdown()
