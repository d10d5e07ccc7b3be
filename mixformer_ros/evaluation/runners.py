"""Run any single-object tracker over sequences with one interface.

A tracker here is anything with ``init(image_bgr, box_xywh)`` and
``update(image_bgr) -> (box_xywh, score)``. Frames are handed over as OpenCV BGR arrays because
that is what every reader decodes; adapters convert when their tracker wants something else
(MixFormerV2 takes RGB). Adapters exist for MixFormerV2 (:func:`mixformer_ros.tracking.build_tracker`)
and OpenCV's CSRT, KCF and NanoTrack, so the same harness reports all of them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from .datasets import Sequence
from .results import SequenceResult, has_result, read_result, write_result

log = logging.getLogger(__name__)

TRACKER_NAMES = ("mixformer", "csrt", "kcf", "nanotrack")


class Tracker(Protocol):
    """``init`` starts a new track (forgetting any earlier one), so one instance serves many sequences."""

    name: str

    def init(self, image_bgr: np.ndarray, box_xywh) -> None: ...

    def update(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]: ...


class OpenCVTracker:
    """OpenCV's CSRT, KCF or NanoTrack (``cv2.TrackerNano``) behind the harness interface.

    OpenCV trackers take integer rectangles, so the initial box is rounded. When OpenCV reports a
    failure (it then returns ``0,0,0,0``) the previous box is kept with score 0, as a user
    drawing the last known box would do; this reproduces the reference numbers of the data set.
    """

    def __init__(self, kind: str, nano_backbone: str | None = None, nano_head: str | None = None):
        import cv2

        self._cv2 = cv2
        self.kind = kind
        self.name = kind
        if kind == "nanotrack":
            missing = [p for p in (nano_backbone, nano_head) if not p or not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(
                    "NanoTrack needs its two ONNX files: --nano-backbone and --nano-head (nano_backbone= and nano_head=) "
                    f"(missing: {missing or [nano_backbone, nano_head]})"
                )
            self._params = cv2.TrackerNano_Params()
            self._params.backbone = str(nano_backbone)
            self._params.neckhead = str(nano_head)
        elif kind not in ("csrt", "kcf"):
            raise ValueError(f"unknown OpenCV tracker {kind!r}; choose csrt, kcf or nanotrack")
        self._tracker = None
        self._last_box = None

    def _create(self):
        cv2 = self._cv2
        if self.kind == "csrt":
            return cv2.TrackerCSRT.create()
        if self.kind == "kcf":
            return cv2.TrackerKCF.create()
        return cv2.TrackerNano.create(self._params)

    def init(self, image_bgr: np.ndarray, box_xywh) -> None:
        # A fresh instance per sequence: OpenCV trackers keep state across init() calls.
        self._tracker = self._create()
        rect = tuple(int(round(float(v))) for v in box_xywh)
        self._tracker.init(image_bgr, rect)
        self._last_box = np.asarray(box_xywh, dtype=np.float64)

    def update(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        if self._tracker is None:
            raise RuntimeError("update() called before init()")
        ok, rect = self._tracker.update(image_bgr)
        if not ok:
            return self._last_box, 0.0
        self._last_box = np.asarray(rect, dtype=np.float64)
        score = float(self._tracker.getTrackingScore()) if self.kind == "nanotrack" else 1.0
        return self._last_box, score


class MixFormerAdapter:
    """MixFormerV2 from :func:`mixformer_ros.tracking.build_tracker`, fed RGB frames."""

    def __init__(self, tracker=None, name: str = "mixformer", **build_kwargs):
        import cv2

        self._cv2 = cv2
        if tracker is None:
            from mixformer_ros.tracking import build_tracker

            tracker = build_tracker(**build_kwargs)
        self._tracker = tracker
        self.name = name

    def _rgb(self, image_bgr: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(image_bgr, self._cv2.COLOR_BGR2RGB)

    def init(self, image_bgr: np.ndarray, box_xywh) -> None:
        self._tracker.initialize(self._rgb(image_bgr), [float(v) for v in box_xywh])

    def update(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        res = self._tracker.track(self._rgb(image_bgr))
        return np.asarray(res.box, dtype=np.float64), float(res.score)


def make_tracker(kind: str, **options) -> Tracker:
    """Build a harness tracker by name.

    ``mixformer`` accepts the keyword arguments of ``build_tracker`` (variant, checkpoint,
    backend, device, preset, ...); ``nanotrack`` needs ``nano_backbone`` and ``nano_head``.
    """
    if kind == "mixformer":
        return MixFormerAdapter(**options)
    if kind in ("csrt", "kcf"):
        return OpenCVTracker(kind)
    if kind == "nanotrack":
        return OpenCVTracker(kind, options.get("nano_backbone"), options.get("nano_head"))
    raise ValueError(f"unknown tracker {kind!r}; choose from {TRACKER_NAMES}")


def track_frames(
    tracker: Tracker, frames: Iterable[np.ndarray], init_box, name: str = "", total=None,
    progress: bool = False, frame_step: int = 1,
) -> SequenceResult:
    """Initialise on the first frame with ``init_box``, then update on every ``frame_step``-th frame.

    Row 0 of the result is the initial box (the toolkits' convention); ``times[i]`` is the
    wall time of ``init`` (i = 0) or ``update`` on frame i. A ``frame_step`` above 1 plays a
    tracker that falls behind its camera, as a node does on a slow machine: the frames in
    between are not shown to the tracker and keep the last box (what a consumer of the
    detections has for them), with NaN time and score.
    """
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    boxes, times, scores = [], [], []
    iterator = iter(frames)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=total, desc=name or tracker.name, unit="frame", leave=False)
    for i, frame in enumerate(iterator):
        if i % frame_step:
            boxes.append(boxes[-1])
            times.append(np.nan)
            scores.append(np.nan)
            continue
        start = time.perf_counter()
        if i == 0:
            tracker.init(frame, init_box)
            box, score = np.asarray(init_box, dtype=np.float64), np.nan
        else:
            box, score = tracker.update(frame)
        times.append(time.perf_counter() - start)
        boxes.append(np.asarray(box, dtype=np.float64).reshape(4))
        scores.append(score)
    if not boxes:
        raise ValueError(f"sequence {name!r} has no frames")
    return SequenceResult(name, np.stack(boxes), np.asarray(times), np.asarray(scores, dtype=np.float64))


def run_sequence(tracker: Tracker, seq: Sequence, progress: bool = False, frame_step: int = 1) -> SequenceResult:
    """Run one tracker over one sequence folder, initialised from its first ground truth
    (on every ``frame_step``-th frame: see ``track_frames``)."""
    # Frames the tracker skips are not decoded.
    frames = (seq.read_frame(i) if i % frame_step == 0 else None for i in range(len(seq)))
    return track_frames(tracker, frames, seq.init_box, seq.name, total=len(seq), progress=progress,
                        frame_step=frame_step)


def _check_frame_step(result: SequenceResult, frame_step: int, tracker_dir: Path) -> None:
    """A reused result must come from the same frame step: the frames it skipped have NaN times."""
    if result.times is None:  # e.g. another toolkit's file: nothing tells, accept it
        return
    ran = np.isfinite(result.times)
    if not np.array_equal(ran, np.arange(len(ran)) % frame_step == 0):
        raise ValueError(f"{tracker_dir}: the existing result of {result.name} was not run with frame step "
                         f"{frame_step}; rerun it with --overwrite or write to another --name")


def run_dataset(
    tracker: Tracker | Callable[[], Tracker],
    sequences: list[Sequence],
    tracker_dir: Path,
    overwrite: bool = False,
    progress: bool = True,
    frame_step: int = 1,
) -> list[SequenceResult]:
    """Run a tracker over sequences (on every ``frame_step``-th frame), writing one results file
    per sequence into ``tracker_dir``.

    ``tracker`` is a harness tracker or a function that makes one; the function is called once,
    only if some sequence has to run (so a model is not loaded for nothing). Sequences that
    already have a results file are read back instead of rerun unless ``overwrite``, so an
    interrupted run resumes where it stopped.
    """
    results = []
    iterator = sequences
    if progress:
        from tqdm import tqdm

        iterator = tqdm(sequences, desc=Path(tracker_dir).name, unit="seq")
    for seq in iterator:
        if not overwrite and has_result(tracker_dir, seq.name):
            result = read_result(tracker_dir, seq.name)
            if len(result.boxes) == len(seq):
                log.info("%s: reusing %s", seq.name, tracker_dir)
                _check_frame_step(result, frame_step, tracker_dir)
                results.append(result)
                continue
            log.warning("%s: the existing result has %d boxes for %d frames; running it again",
                        seq.name, len(result.boxes), len(seq))
        if not hasattr(tracker, "update"):
            tracker = tracker()
        result = run_sequence(tracker, seq, progress=progress, frame_step=frame_step)
        write_result(tracker_dir, result)
        results.append(result)
    return results


def run_bag(tracker: Tracker, info, progress: bool = False) -> SequenceResult:
    """Run a tracker over the frames of a bag (see :func:`bags.read_bag_info`).

    Frames decode to the same BGR pixels as the folder the bag was made from, so the boxes equal
    those of :func:`run_sequence`.
    """
    from .bags import iter_bag_frames

    frames = (bgr for _, bgr in iter_bag_frames(info))
    return track_frames(tracker, frames, info.init_box, info.name, total=len(info), progress=progress)
