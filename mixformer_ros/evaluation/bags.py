"""Sequences and videos to rosbag2 files, and back, with the pure-Python ``rosbags`` library.

``ros2 bag`` is not installable from PyPI, but bags written here are ordinary rosbag2 bags
(sqlite3 or mcap storage, CDR messages, type descriptions included) that ``ros2 bag play``
replays on a real ROS system. One bag holds:

* the frames on a camera topic: ``sensor_msgs/Image`` (``bgr8``, the decoded pixels, bit-equal
  on read) or ``sensor_msgs/CompressedImage`` on ``<topic>/compressed`` (JPEG; frames that are
  already JPEG files are stored byte for byte, so decoding gives the same pixels as the folder);
* ``sensor_msgs/CameraInfo`` for every frame (size only; zero matrices mean "uncalibrated");
* the ground truth as ``vision_msgs/Detection2D`` (4.x layout) with the frame's header stamp;
  frames whose target is absent or unknown get no ground-truth message.

Stamps are ``start + i / fps``; the bag's receive time equals the header stamp. Nothing here
imports rclpy.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .datasets import Sequence, read_boxes
from .metrics import valid_gt_mask

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
IMAGE_FORMATS = ("raw", "jpeg")
IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_MSG = "sensor_msgs/msg/CompressedImage"
INFO_MSG = "sensor_msgs/msg/CameraInfo"
DETECTION_MSG = "vision_msgs/msg/Detection2D"
GT_CLASS_ID = "ground_truth"
JPEG_FORMAT = "bgr8; jpeg compressed bgr8"

# vision_msgs 4.x definitions of the types Detection2D needs (field lists of the public package).
_VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
}


MAX_FPS = 1e6  # stamps at least a microsecond apart
MAX_STAMP_NS = 2**31 * 10**9  # builtin_interfaces/Time.sec is an int32


@dataclass
class BagConfig:
    """How a sequence is laid out in a bag."""

    storage: str = "mcap"
    image_format: str = "raw"  # "raw" -> sensor_msgs/Image bgr8, "jpeg" -> CompressedImage
    fps: float = 30.0
    image_topic: str = "/camera/image_raw"
    info_topic: str = "/camera/camera_info"
    gt_topic: str = "/ground_truth"
    frame_id: str = "camera_optical_frame"
    start_time_ns: int = 1_700_000_000 * 10**9  # fixed, so the same input gives the same bag
    version: int = 8  # rosbag2 metadata version (8 or 9)

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not (math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS):
            raise ValueError(f"fps must be in (0, {MAX_FPS:g}] so that frames get distinct stamps, got {self.fps}")
        if not 0 < self.start_time_ns < MAX_STAMP_NS:
            raise ValueError("start_time_ns must be positive (a zero stamp means 'unset' in ROS) and below "
                             f"2^31 s (builtin_interfaces/Time.sec is int32), got {self.start_time_ns}")

    @property
    def camera_topic(self) -> str:
        """The topic the frames go to: ``image_topic`` or its ``/compressed`` sub-topic."""
        return self.image_topic + "/compressed" if self.image_format == "jpeg" else self.image_topic

    def stamp_ns(self, index: int) -> int:
        return self.start_time_ns + int(round(index * 1e9 / self.fps))


def make_typestore():
    """The Kilted type store plus the vision_msgs 4.x types used for ground truth."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name, text in _VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def _time(store, stamp_ns: int):
    return store.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)


def _header(store, stamp_ns: int, frame_id: str):
    return store.types["std_msgs/msg/Header"](stamp=_time(store, stamp_ns), frame_id=frame_id)


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (rosbags or rclpy object) to integer nanoseconds."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def box_to_detection(store, box_xywh, stamp_ns: int, frame_id: str, track_id: str):
    """A ground-truth Detection2D: centre and size in pixels, score 1."""
    types = store.types
    x, y, w, h = (float(v) for v in box_xywh)
    hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=GT_CLASS_ID, score=1.0),
        pose=types["geometry_msgs/msg/PoseWithCovariance"](
            pose=types["geometry_msgs/msg/Pose"](
                position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            covariance=np.zeros(36, dtype=np.float64),
        ),
    )
    bbox = types["vision_msgs/msg/BoundingBox2D"](
        center=types["vision_msgs/msg/Pose2D"](
            position=types["vision_msgs/msg/Point2D"](x=x + 0.5 * w, y=y + 0.5 * h), theta=0.0
        ),
        size_x=w,
        size_y=h,
    )
    return types[DETECTION_MSG](
        header=_header(store, stamp_ns, frame_id), results=[hypothesis], bbox=bbox, id=track_id
    )


def detection_to_box(msg) -> np.ndarray:
    """x, y, w, h of a Detection2D's bbox (rosbags or rclpy message)."""
    w, h = float(msg.bbox.size_x), float(msg.bbox.size_y)
    cx, cy = float(msg.bbox.center.position.x), float(msg.bbox.center.position.y)
    return np.array([cx - 0.5 * w, cy - 0.5 * h, w, h], dtype=np.float64)


def through_detection(boxes_xywh) -> np.ndarray:
    """Boxes as they read back from a Detection2D (centre + size), for exact comparisons.

    ``x -> x + w/2 -> - w/2`` can move ``x`` by one unit in the last place for non-integer
    boxes; comparing live results with offline ones through this function keeps it exact.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    centres = boxes[:, :2] + 0.5 * boxes[:, 2:]
    return np.concatenate([centres - 0.5 * boxes[:, 2:], boxes[:, 2:]], axis=1)


def _image_msg(store, image_bgr: np.ndarray, stamp_ns: int, frame_id: str):
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR frame, got {image_bgr.shape} {image_bgr.dtype}")
    h, w = image_bgr.shape[:2]
    return store.types[IMAGE_MSG](
        header=_header(store, stamp_ns, frame_id), height=h, width=w, encoding="bgr8",
        is_bigendian=0, step=w * 3, data=np.ascontiguousarray(image_bgr).reshape(-1),
    )


def _compressed_msg(store, jpeg: bytes, stamp_ns: int, frame_id: str):
    return store.types[COMPRESSED_MSG](
        header=_header(store, stamp_ns, frame_id), format=JPEG_FORMAT,
        data=np.frombuffer(jpeg, dtype=np.uint8),
    )


def _camera_info(store, width: int, height: int, stamp_ns: int, frame_id: str):
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return store.types[INFO_MSG](
        header=_header(store, stamp_ns, frame_id), height=height, width=width,
        distortion_model="plumb_bob", d=np.zeros(5), k=np.zeros(9), r=np.zeros(9), p=np.zeros(12),
        binning_x=0, binning_y=0, roi=roi,
    )


@dataclass
class BagFrame:
    """One frame to write: decoded BGR pixels, JPEG bytes, or both."""

    bgr: np.ndarray | None = None
    jpeg: bytes | None = None


def _encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _decode_jpeg(data) -> np.ndarray:
    import cv2

    # EXIF orientation ignored, as the node and image_transport decode a CompressedImage.
    image = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError("cannot decode JPEG data")
    return image


def write_bag(
    out, frames: Iterator[BagFrame], gt, absent=None, config: BagConfig | None = None,
    name: str = "", total: int | None = None, progress: bool = True,
) -> Path:
    """Write frames (+ camera info + ground truth) into a new bag folder ``out``.

    ``gt`` is ``(N, 4)`` x, y, w, h or None; rows that are NaN, sizeless or ``absent`` get no
    ground-truth message. Fails if ``out`` exists (rosbags never overwrites).
    """
    from rosbags.rosbag2 import StoragePlugin

    config = config or BagConfig()
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another output path")
    store = make_typestore()
    valid = None
    if gt is not None:
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        valid = valid_gt_mask(gt, absent)
    plugin = StoragePlugin.MCAP if config.storage == "mcap" else StoragePlugin.SQLITE3
    msgtype = COMPRESSED_MSG if config.image_format == "jpeg" else IMAGE_MSG
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, desc=f"to-bag {name}".strip(), unit="frame")
    try:
        count = _write_messages(out, frames, gt, valid, config, name, store, plugin, msgtype)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a bag without its metadata.yaml would only block a rerun
        raise
    if gt is not None and count != gt.shape[0]:
        log.warning("%s: wrote %d frames but the ground truth has %d rows", out, count, gt.shape[0])
    return out


def _write_messages(out: Path, frames, gt, valid, config: BagConfig, name: str, store, plugin, msgtype) -> int:
    """The body of :func:`write_bag`: frames, camera info and ground truth; returns the frame count."""
    from rosbags.rosbag2 import Writer

    count = 0
    with Writer(out, version=config.version, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection(config.camera_topic, msgtype, typestore=store)
        info_conn = writer.add_connection(config.info_topic, INFO_MSG, typestore=store)
        gt_conn = None if gt is None else writer.add_connection(config.gt_topic, DETECTION_MSG, typestore=store)
        for i, frame in enumerate(frames):
            stamp = config.stamp_ns(i)
            if config.image_format == "jpeg":
                jpeg = frame.jpeg if frame.jpeg is not None else _encode_jpeg(frame.bgr)
                msg = _compressed_msg(store, jpeg, stamp, config.frame_id)
                height, width = (frame.bgr if frame.bgr is not None else _decode_jpeg(jpeg)).shape[:2]
            else:
                bgr = frame.bgr if frame.bgr is not None else _decode_jpeg(frame.jpeg)
                msg = _image_msg(store, bgr, stamp, config.frame_id)
                height, width = bgr.shape[:2]
            writer.write(image_conn, stamp, store.serialize_cdr(msg, msgtype))
            info = _camera_info(store, width, height, stamp, config.frame_id)
            writer.write(info_conn, stamp, store.serialize_cdr(info, INFO_MSG))
            if gt_conn is not None and i < gt.shape[0] and valid[i]:
                det = box_to_detection(store, gt[i], stamp, config.frame_id, name)
                writer.write(gt_conn, stamp, store.serialize_cdr(det, DETECTION_MSG))
            count += 1
    return count


def sequence_to_bag(seq: Sequence, out, config: BagConfig | None = None, progress: bool = True) -> Path:
    """Convert a sequence folder. JPEG frames go into a JPEG bag byte for byte."""
    config = config or BagConfig()

    def frames():
        for i, path in enumerate(seq.frames):
            if config.image_format == "jpeg" and path.suffix.lower() in (".jpg", ".jpeg"):
                yield BagFrame(jpeg=path.read_bytes())
            else:
                yield BagFrame(bgr=seq.read_frame(i))

    return write_bag(out, frames(), seq.gt, seq.absent, config, seq.name, len(seq), progress)


def video_to_bag(video, out, config: BagConfig | None = None, gt_file=None, progress: bool = True) -> Path:
    """Convert a video file; ``gt_file`` optionally gives one x,y,w,h row per frame.

    Stamps follow ``config.fps``; pass the video's own rate (:func:`video_fps`) to keep its timing.
    """
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise OSError(f"cannot open video {video}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    gt = read_boxes(gt_file)[0] if gt_file is not None else None

    def frames():
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                yield BagFrame(bgr=image)
        finally:
            cap.release()

    return write_bag(out, frames(), gt, None, config, Path(video).stem, total, progress)


def video_fps(video) -> float | None:
    """The frame rate a video file declares, or None when it declares none."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and fps > 0 else None


def image_msg_to_bgr(msg) -> np.ndarray:
    """Decode a sensor_msgs Image (bgr8, rgb8, mono8, bgra8, rgba8) or CompressedImage to BGR."""
    import cv2

    if hasattr(msg, "format"):
        return _decode_jpeg(msg.data)
    conversions = {
        "bgr8": (3, None), "rgb8": (3, cv2.COLOR_RGB2BGR), "mono8": (1, cv2.COLOR_GRAY2BGR),
        "bgra8": (4, cv2.COLOR_BGRA2BGR), "rgba8": (4, cv2.COLOR_RGBA2BGR),
    }
    if msg.encoding not in conversions:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported; use one of {list(conversions)}")
    channels, code = conversions[msg.encoding]
    data = np.asarray(msg.data, dtype=np.uint8)
    rows = data[: msg.height * msg.step].reshape(msg.height, msg.step)  # (H, step)
    image = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)  # (H, W, C)
    if code is None:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(image, code)


@dataclass
class BagInfo:
    """What a bag holds for evaluation: the camera topic and the ground truth per frame."""

    path: Path
    name: str
    image_topic: str
    image_msgtype: str
    gt_topic: str | None
    stamps_ns: np.ndarray  # (N,) header stamps of the frames, in bag order
    gt: np.ndarray  # (N, 4) ground truth joined by stamp; NaN where the frame has none
    absent: np.ndarray  # (N,) True where no ground truth was recorded

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @property
    def init_box(self) -> np.ndarray:
        box = self.gt[0]
        if not (np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0):
            raise ValueError(f"{self.path}: the first frame has no ground truth to initialise from")
        return box

    @property
    def fps(self) -> float:
        """Recorded frame rate from the stamps (median spacing)."""
        if len(self) < 2:
            return float("nan")
        return 1e9 / float(np.median(np.diff(self.stamps_ns)))


def _pick_topic(reader, msgtypes: tuple[str, ...], topic: str | None, what: str):
    conns = [c for c in reader.connections if c.msgtype in msgtypes]
    if topic is not None:
        conns = [c for c in conns if c.topic == topic]
    topics = sorted({c.topic for c in conns})
    if len(topics) == 1:
        return [c for c in conns if c.topic == topics[0]]
    if not topics:
        if what == "ground truth" and topic is None:
            return []  # e.g. a converted video without ground truth: frames only
        raise ValueError(f"{reader.path}: no {what} topic of type {msgtypes}" + (f" named {topic}" if topic else ""))
    raise ValueError(f"{reader.path}: several {what} topics {topics}; choose one explicitly")


def header_stamp_ns(store, rawdata, msgtype) -> int:
    return stamp_to_ns(store.deserialize_cdr(rawdata, msgtype).header.stamp)


def read_bag_info(path, image_topic: str | None = None, gt_topic: str | None = None) -> BagInfo:
    """Index a bag: its camera topic, frame stamps and ground truth (joined by header stamp)."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise ValueError(f"{path} is not a rosbag2 folder: it has no metadata.yaml")
    store = make_typestore()
    with Reader(path) as reader:
        image_conns = _pick_topic(reader, (IMAGE_MSG, COMPRESSED_MSG), image_topic, "camera")
        gt_conns = _pick_topic(reader, (DETECTION_MSG,), gt_topic, "ground truth")
        msgtype = image_conns[0].msgtype
        stamps, boxes, name = [], {}, ""
        for conn, _, raw in reader.messages(connections=image_conns + gt_conns):
            if conn.msgtype == DETECTION_MSG:
                det = store.deserialize_cdr(raw, DETECTION_MSG)
                boxes[stamp_to_ns(det.header.stamp)] = detection_to_box(det)
                name = name or det.id
            else:
                stamps.append(header_stamp_ns(store, raw, msgtype))
    if not stamps:
        raise ValueError(f"{path}: no frames on {image_conns[0].topic}")
    stamps = np.asarray(stamps, dtype=np.int64)
    gt = np.full((stamps.shape[0], 4), np.nan)
    for i, s in enumerate(stamps):
        if int(s) in boxes:
            gt[i] = boxes[int(s)]
    absent = ~np.all(np.isfinite(gt), axis=1)
    return BagInfo(
        path, name or path.name, image_conns[0].topic, msgtype,
        gt_conns[0].topic if gt_conns else None, stamps, gt, absent,
    )


def iter_bag_frames(info: BagInfo) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp ns, BGR frame) for every camera message, in bag order."""
    from rosbags.rosbag2 import Reader

    store = make_typestore()
    with Reader(info.path) as reader:
        conns = [c for c in reader.connections if c.topic == info.image_topic]
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            yield stamp_to_ns(msg.header.stamp), image_msg_to_bgr(msg)


def iter_bag_messages(path, topics: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag time ns, CDR bytes) of the given topics, in time order.

    The player replays these bytes without decoding them.
    """
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        missing = set(topics) - {c.topic for c in conns}
        if missing:
            raise ValueError(f"{path}: no topic(s) {sorted(missing)}; it has {sorted(reader.topics)}")
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, timestamp, bytes(raw)
