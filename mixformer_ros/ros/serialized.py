"""Image messages read straight from their serialized (CDR) bytes.

The node subscribes to images with ``raw=True``: rclpy then hands over the bytes that came off
the wire instead of building a Python message, which would copy the pixel buffer once more. Here
only the small fields are parsed; the pixels stay a zero-copy view on the received bytes, and a
cut-off or garbled message raises ImageConversionError, which the node reports as a rejected
frame (rclpy drops such a message with only a line on stderr). The speed gain measured on the
project's 2-core VM is small for the node (~0.1 ms a 640x480 frame; docs/node.md, Latency).

Every rmw we know of sends ROS messages as little-endian plain CDR. Any other encapsulation is
handed to rclpy's own deserialiser, so an unusual middleware costs speed, never frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .conversions import ImageConversionError

# Encapsulation header (2 bytes of representation id, 2 of options) of little-endian plain CDR.
_CDR_LE = b"\x00\x01"
_ENCAPSULATION_SIZE = 4
_UINT32 = struct.Struct("<I")
_INT32 = struct.Struct("<i")


@dataclass(frozen=True)
class ImageFields:
    """The sensor_msgs/Image fields the node uses; ``data`` is a view on the serialized bytes."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class CompressedImageFields:
    """The sensor_msgs/CompressedImage fields; ``data`` is a view on the serialized bytes."""

    header: Header
    format: str
    data: memoryview


class _CdrReader:
    """Sequential reader of little-endian plain CDR; alignment counts from after the encapsulation."""

    def __init__(self, serialized: bytes):
        self._buf = memoryview(serialized)
        self._pos = _ENCAPSULATION_SIZE

    def _take(self, size: int, alignment: int = 1) -> int:
        start = self._pos + (-(self._pos - _ENCAPSULATION_SIZE)) % alignment
        if start + size > len(self._buf):
            raise ImageConversionError(
                f"malformed message: field at byte {start} needs {size} bytes, the message has {len(self._buf)}"
            )
        self._pos = start + size
        return start

    def uint8(self) -> int:
        return self._buf[self._take(1)]

    def uint32(self) -> int:
        return _UINT32.unpack_from(self._buf, self._take(4, 4))[0]

    def int32(self) -> int:
        return _INT32.unpack_from(self._buf, self._take(4, 4))[0]

    def octets(self) -> memoryview:
        size = self.uint32()
        start = self._take(size)
        return self._buf[start:start + size]

    def string(self) -> str:
        """As rclpy reads it: up to the first NUL (the length counts the terminating one), and bytes
        that are not UTF-8 replaced rather than refused (the node only copies frame_id through)."""
        raw = bytes(self.octets())
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def header(self) -> Header:
        stamp = Time(sec=self.int32(), nanosec=self.uint32())
        return Header(stamp=stamp, frame_id=self.string())


def _is_plain_cdr_le(serialized: bytes) -> bool:
    return len(serialized) >= _ENCAPSULATION_SIZE and serialized[:2] == _CDR_LE


def _deserialize(serialized: bytes, msg_type):
    if len(serialized) <= _ENCAPSULATION_SIZE:  # Fast-CDR reads past a header-only buffer (SIGSEGV)
        raise ImageConversionError(f"malformed {msg_type.__name__} message: {len(serialized)} bytes, no payload")
    try:
        return deserialize_message(serialized, msg_type)
    except Exception as exc:  # rclpy raises several types for bad bytes; the node must not die on any
        encapsulation = int.from_bytes(serialized[:2], "big")
        raise ImageConversionError(f"malformed {msg_type.__name__} message (CDR encapsulation 0x{encapsulation:04x}; "
                                   f"plain CDR 0x0000/0x0001 is what ROS writers send): {exc}") from None


def read_image(serialized: bytes) -> ImageFields | Image:
    """The fields of a serialized sensor_msgs/Image (a message object for other encodings)."""
    if not _is_plain_cdr_le(serialized):
        return _deserialize(serialized, Image)
    cdr = _CdrReader(serialized)
    header = cdr.header()
    height, width, encoding = cdr.uint32(), cdr.uint32(), cdr.string()
    is_bigendian, step = cdr.uint8(), cdr.uint32()
    return ImageFields(header, height, width, encoding, is_bigendian, step, cdr.octets())


def read_compressed_image(serialized: bytes) -> CompressedImageFields | CompressedImage:
    """The fields of a serialized sensor_msgs/CompressedImage (a message object for other encodings)."""
    if not _is_plain_cdr_le(serialized):
        return _deserialize(serialized, CompressedImage)
    cdr = _CdrReader(serialized)
    header = cdr.header()
    return CompressedImageFields(header, cdr.string(), cdr.octets())
