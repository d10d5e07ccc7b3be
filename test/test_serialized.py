"""Reading image messages from their serialized bytes (the node's raw subscriptions), checked
against rclpy's own serialiser and deserialiser."""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest

from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mixformer_ros.ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
from mixformer_ros.ros.serialized import (
    CompressedImageFields,
    ImageFields,
    read_compressed_image,
    read_image,
)

RNG = np.random.default_rng(11)


def _header(frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = -2, 999_999_999
    return header


def _image(shape, encoding: str, frame_id: str, pad: int = 0, bigendian: bool = False) -> Image:
    dtype = np.uint16 if encoding.endswith("16") else np.uint8
    pixels = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    rows = pixels.reshape(shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((shape[0], pad), 7, np.uint8)], axis=1)
    return Image(header=_header(frame_id), height=shape[0], width=shape[1], encoding=encoding,
                 is_bigendian=bigendian, step=rows.shape[1], data=array.array("B", rows.tobytes()))


# Frame ids and encodings of every length modulo 4 move the later fields across alignment boundaries.
@pytest.mark.parametrize("frame_id", ["", "c", "cam", "camera", "optical_frame_é"])
@pytest.mark.parametrize("encoding,shape,pad,bigendian", [
    ("rgb8", (6, 5, 3), 0, False),
    ("bgr8", (4, 9, 3), 3, False),
    ("mono8", (3, 7), 1, False),
    ("bgra16", (2, 3, 4), 2, True),
    ("mono16", (5, 2), 0, False),
])
def test_image_fields_match_the_message(frame_id, encoding, shape, pad, bigendian):
    msg = _image(shape, encoding, frame_id, pad, bigendian)
    fields = read_image(serialize_message(msg))
    assert isinstance(fields, ImageFields)
    assert fields.header == msg.header
    assert (fields.height, fields.width, fields.encoding, fields.is_bigendian, fields.step) == (
        msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    assert bytes(fields.data) == msg.data.tobytes()
    np.testing.assert_array_equal(image_to_rgb(fields), image_to_rgb(msg))


@pytest.mark.parametrize("fmt", ["", "jpeg", "png", "rgb8; jpeg compressed bgr8"])
def test_compressed_fields_match_the_message(fmt):
    ok, jpg = cv2.imencode(".jpg", RNG.integers(0, 256, size=(24, 32, 3), dtype=np.uint8))
    assert ok
    msg = CompressedImage(header=_header("cam"), format=fmt, data=array.array("B", jpg.tobytes()))
    fields = read_compressed_image(serialize_message(msg))
    assert isinstance(fields, CompressedImageFields)
    assert (fields.header, fields.format, bytes(fields.data)) == (msg.header, fmt, msg.data.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(fields), compressed_to_rgb(msg))


def _big_endian_image(msg: Image) -> bytes:
    """The same Image as big-endian plain CDR (encapsulation 0x0000), laid out by hand."""
    body = bytearray()

    def align(n):
        body.extend(b"\0" * (-len(body) % n))

    def uint32(value, code="I"):
        align(4)
        body.extend(struct.pack(">" + code, value))

    def string(text):
        raw = text.encode() + b"\0"
        uint32(len(raw))
        body.extend(raw)

    uint32(msg.header.stamp.sec, "i")
    uint32(msg.header.stamp.nanosec)
    string(msg.header.frame_id)
    uint32(msg.height)
    uint32(msg.width)
    string(msg.encoding)
    body.append(int(msg.is_bigendian))
    uint32(msg.step)
    uint32(len(msg.data))
    body.extend(msg.data.tobytes())
    return b"\x00\x00\x00\x00" + bytes(body)


def test_other_encapsulations_go_through_rclpy():
    msg = _image((3, 4, 3), "bgr8", "cam", pad=1)
    parsed = read_image(_big_endian_image(msg))
    assert isinstance(parsed, Image) and parsed == msg
    np.testing.assert_array_equal(image_to_rgb(parsed), image_to_rgb(msg))


def test_truncated_or_garbled_bytes_raise_a_conversion_error():
    serialized = serialize_message(_image((6, 5, 3), "rgb8", "camera"))
    for cut in range(len(serialized)):
        with pytest.raises(ImageConversionError, match="malformed"):
            read_image(serialized[:cut])
    with pytest.raises(ImageConversionError, match="malformed Image message"):
        read_image(b"\x00\x00\x00\x00 not cdr at all")
    bad_frame_id = bytearray(serialized)
    bad_frame_id[16] = 0xFF  # the first byte of the frame id, after encapsulation, stamp and length
    # Not UTF-8: replaced, as rclpy does, rather than losing every frame of such a camera.
    assert read_image(bytes(bad_frame_id)).header.frame_id == deserialize_message(bytes(bad_frame_id), Image).header.frame_id
    no_nul = bytearray(serialized)
    no_nul[22] = ord("x")  # the NUL ending "camera" (bytes 16-22): a writer that broke the rule
    assert read_image(bytes(no_nul)).header.frame_id == deserialize_message(bytes(no_nul), Image).header.frame_id
    with pytest.raises(ImageConversionError, match="malformed"):
        read_compressed_image(serialized[:10])
    # A bare encapsulation header of another representation: Fast-CDR read past it (a segfault).
    for read in (read_image, read_compressed_image):
        with pytest.raises(ImageConversionError, match="no payload"):
            read(b"\x00\x00\x00\x01")


@pytest.mark.parametrize("read,decode,message", [
    (read_image, image_to_rgb, _image((6, 5, 3), "bgr8", "camera", pad=2)),
    (read_compressed_image, compressed_to_rgb,
     CompressedImage(header=_header("camera"), format="jpeg",
                     data=array.array("B", cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))[1].tobytes()))),
])
def test_any_corruption_of_the_bytes_is_a_conversion_error_or_a_valid_frame(read, decode, message):
    """What the node's image callback relies on: no other exception escapes (one would end its spin)."""
    serialized = bytearray(serialize_message(message))
    rng = np.random.default_rng(5)
    rejected = 0
    for _ in range(3000):
        corrupt = bytearray(serialized)
        for pos in rng.integers(0, len(corrupt), size=rng.integers(1, 4)):
            corrupt[pos] = int(rng.integers(0, 256))
        try:
            rgb = decode(read(bytes(corrupt)))
        except ImageConversionError:
            rejected += 1
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size > 0
    assert 0 < rejected < 3000  # both outcomes were met: flipped pixels decode, broken fields do not
