"""Message <-> NumPy conversions for the tracker node, written without cv_bridge.

cv_bridge is not available from PyPI and breaks with NumPy 2, so images are decoded here.
Raw images become a view on the message buffer wherever the layout allows (rgb8 without row
padding costs nothing); every other layout is converted with one OpenCV call. All functions
raise :class:`ImageConversionError` with a message meant for the node's status topic.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, ObjectHypothesisWithPose

if TYPE_CHECKING:  # serialized.py imports this module
    from .serialized import CompressedImageFields, ImageFields


class ImageConversionError(ValueError):
    """An image message the node cannot turn into an RGB frame; the text says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    bytes_per_channel: int
    # OpenCV colour conversion to RGB, or None when the pixels already are RGB.
    to_rgb: int | None


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, None),
    "bgr8": _Layout(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": _Layout(3, 2, None),
    "bgr16": _Layout(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Layout(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Layout(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": _Layout(1, 2, cv2.COLOR_GRAY2RGB),
}

SUPPORTED_ENCODINGS = tuple(_LAYOUTS)

# A compressed frame may claim at most this many pixels (8K video is 33 M). A few hundred bytes of
# header can claim 20000x20000, which OpenCV would decode for tens of seconds into gigabytes.
MAX_COMPRESSED_PIXELS = 1 << 26
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _declared_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares; None when the bytes are neither or the JPEG
    has no frame header before its data."""
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24:
        return struct.unpack(">II", data[16:24])  # IHDR comes first
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA:  # start of scan: no frame header came first
            return None
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def image_to_rgb(msg: Image | ImageFields) -> np.ndarray:
    """Decode a sensor_msgs/Image (or its fields read from the serialized bytes) into an
    (H, W, 3) uint8 RGB array.

    16-bit encodings keep their top 8 bits (full range 0..65535 maps to 0..255). The result
    may share memory with ``msg.data`` and is marked read-only.
    """
    layout = _LAYOUTS.get(msg.encoding.lower())
    if layout is None:
        raise ImageConversionError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels*bytes = {row_bytes} for {msg.encoding}"
        )
    if len(msg.data) != step * height:
        raise ImageConversionError(
            f"data holds {len(msg.data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )

    raw = np.frombuffer(msg.data, dtype=np.uint8)
    rows = raw.reshape(height, step)[:, :row_bytes]  # (H, row_bytes), drops the step padding
    if layout.bytes_per_channel == 2:
        # Byte order comes from the message, not from this machine.
        dtype = np.dtype(">u2") if msg.is_bigendian else np.dtype("<u2")
        wide = np.ascontiguousarray(rows).view(dtype)  # (H, W*C)
        pixels = (wide >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, layout.channels)  # (H, W, C)

    if layout.to_rgb is None:
        rgb = pixels
    else:
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels), layout.to_rgb)
    if not rgb.flags.c_contiguous:
        rgb = np.ascontiguousarray(rgb)
    rgb.flags.writeable = False
    return rgb


def compressed_to_rgb(msg: CompressedImage | CompressedImageFields) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG, or its fields read from the serialized
    bytes) into an (H, W, 3) uint8 RGB array.

    ``format`` is only checked for kinds we cannot decode (compressedDepth); the codec itself
    is recognised from the data, as image_transport's decoder does for an empty format.
    """
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressed depth images are not supported (format '{msg.format}')")
    if len(msg.data) == 0:
        raise ImageConversionError("empty compressed image")
    def undecodable(why: str = "") -> ImageConversionError:
        what = f"could not decode {len(msg.data)} bytes of compressed data (format '{msg.format}')"
        return ImageConversionError(f"{what}: {why}" if why else what)

    # The whole buffer (EXIF/ICC/XMP segments may fill 64 KiB), read in place: no copy per frame.
    size = _declared_size(memoryview(msg.data).cast("B"))
    if size is None:
        raise undecodable("not a JPEG or PNG image with a readable header")
    if size[0] * size[1] > MAX_COMPRESSED_PIXELS:
        raise undecodable(f"the header declares {size[0]}x{size[1]} pixels, more than {MAX_COMPRESSED_PIXELS} "
                          "(MAX_COMPRESSED_PIXELS)")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    try:
        # Pixels as stored, as image_transport's decoder gives them to rviz and other nodes: EXIF
        # orientation applied would put our boxes in another pixel frame than theirs.
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:  # OpenCV raises, rather than returning None, on some malformed data
        raise undecodable(str(exc).strip().splitlines()[-1]) from None
    if bgr is None or bgr.size == 0:
        raise undecodable()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb.flags.writeable = False
    return rgb


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """Wrap an (H, W, 3) uint8 array as a sensor_msgs/Image (rgb8 or bgr8) with the given header."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding}")
    height, width = rgb.shape[:2]
    msg = Image()
    msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = width * 3
    # array.array from bytes is one memcpy; a plain bytes object would be copied element-wise.
    msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
    return msg


def roi_to_xywh(roi: RegionOfInterest, width: int, height: int) -> list[float]:
    """Validate an initialisation box against the image size and return it as [x, y, w, h].

    Refuses zero-sized boxes and boxes that leave the image, instead of silently clipping
    them, so a caller that mixed up coordinates is told so.
    """
    x, y, w, h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    if w < 1 or h < 1:
        raise ValueError(f"degenerate box: width={w}, height={h} (both must be >= 1 px)")
    if x + w > width or y + h > height:
        raise ValueError(
            f"box x={x} y={y} w={w} h={h} extends beyond the {width}x{height} image"
        )
    return [float(x), float(y), float(w), float(h)]


def make_detection(
    header: Header, box_xywh, score: float, label: str, track_id: str
) -> Detection2D:
    """Build the vision_msgs 4.x Detection2D for one tracked box (centre/size in pixels)."""
    x, y, w, h = (float(v) for v in box_xywh)
    det = Detection2D()
    det.header = header
    det.id = track_id
    det.bbox.center.position.x = x + 0.5 * w
    det.bbox.center.position.y = y + 0.5 * h
    det.bbox.center.theta = 0.0
    det.bbox.size_x = w
    det.bbox.size_y = h
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = label
    hyp.hypothesis.score = float(score)
    det.results = [hyp]
    return det


def detection_to_xywh(det: Detection2D) -> list[float]:
    """Inverse of :func:`make_detection`'s geometry: [x, y, w, h] in pixels."""
    w, h = det.bbox.size_x, det.bbox.size_y
    return [det.bbox.center.position.x - 0.5 * w, det.bbox.center.position.y - 0.5 * h, w, h]


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time as integer nanoseconds (the frame buffer's key)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
