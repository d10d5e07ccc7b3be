"""Image and box conversions of the ROS layer and its debug-image drawing (no DDS involved: pure NumPy)."""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest

from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from mixformer_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    detection_to_xywh,
    image_to_rgb,
    make_detection,
    rgb_to_image,
    roi_to_xywh,
    stamp_to_ns,
)
from mixformer_ros.ros.drawing import draw_box
from mixformer_ros.ros.frame_buffer import FrameBuffer
from node_harness import png_declaring

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Build an Image by hand, optionally with `pad` junk bytes at the end of every row."""
    h = pixels.shape[0]
    rows = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)  # (H, row_bytes)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=pixels.shape[1], encoding=encoding, is_bigendian=bigendian)
    msg.step = rows.shape[1]
    msg.data = array.array("B", rows.tobytes())
    return msg


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_become_rgb(pad):
    bgr = RGB[..., ::-1]
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    bgra = np.concatenate([bgr, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    for pixels, enc in [(RGB, "rgb8"), (bgr, "bgr8"), (rgba, "rgba8"), (bgra, "bgra8")]:
        out = image_to_rgb(_msg(pixels, enc, pad))
        assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, RGB, err_msg=enc)


def test_mono8_is_replicated_to_three_channels():
    gray = RGB[..., 0]
    out = image_to_rgb(_msg(gray, "mono8", pad=1))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_rgb8_without_padding_is_zero_copy_and_read_only():
    msg = _msg(RGB, "rgb8")
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable


@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_encodings_keep_the_high_byte(bigendian):
    wide = RNG.integers(0, 65536, size=(4, 6, 3), dtype=np.uint16)
    stored = wide.astype(">u2" if bigendian else "<u2")
    expected = (wide >> 8).astype(np.uint8)
    out = image_to_rgb(_msg(stored, "rgb16", pad=2, bigendian=bigendian))
    np.testing.assert_array_equal(out, expected)
    out = image_to_rgb(_msg(stored[..., ::-1], "bgr16", bigendian=bigendian))
    np.testing.assert_array_equal(out, expected)
    mono = image_to_rgb(_msg(stored[..., 0], "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(mono[..., 1], expected[..., 0])


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: setattr(m, "encoding", "32FC1"), "unsupported encoding '32FC1'"),
        (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported encoding"),
        (lambda m: setattr(m, "step", 20), "step 20 is smaller"),
        (lambda m: setattr(m, "height", 6), "expected step*height"),
        (lambda m: setattr(m, "data", array.array("B", b"\x00" * 10)), "data holds 10 bytes"),
        (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty image"),
    ],
)
def test_malformed_images_are_refused_with_a_reason(mutate, reason):
    msg = _msg(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=reason.replace("*", r"\*")):
        image_to_rgb(msg)


def test_supported_encodings_are_listed_in_the_error():
    with pytest.raises(ImageConversionError) as err:
        image_to_rgb(_msg(RGB, "yuv422"))
    assert all(enc in str(err.value) for enc in SUPPORTED_ENCODINGS)


def test_jpeg_and_png_decode_to_rgb():
    big = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", big[..., ::-1])
    assert ok
    out = compressed_to_rgb(CompressedImage(format="rgb8; png compressed rgb8", data=array.array("B", png.tobytes())))
    np.testing.assert_array_equal(out, big)
    ok, jpg = cv2.imencode(".jpg", big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    out = compressed_to_rgb(CompressedImage(format="", data=array.array("B", jpg.tobytes())))
    assert out.shape == big.shape
    assert np.abs(out.astype(int) - big.astype(int)).mean() < 25  # lossy, but the same picture


def _with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """The JPEG with an APPn segment inserted right after its start-of-image marker."""
    return jpeg[:2] + bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_jpegs_from_phones_and_ip_cameras_decode_as_stored():
    """Metadata segments (ICC, XMP) may push the frame header past the first 64 KiB, and an EXIF
    orientation must not rotate the pixels: image_transport and rviz show them as stored."""
    wide = cv2.resize(RGB, (80, 48), interpolation=cv2.INTER_NEAREST)
    jpeg = cv2.imencode(".jpg", wide[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes()
    big_metadata = _with_segment(_with_segment(jpeg, 0xE2, b"\x00" * 60_000), 0xE2, b"\x00" * 60_000)
    out = compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", big_metadata)))
    assert out.shape == (48, 80, 3)
    # EXIF (little-endian TIFF) with one IFD entry: Orientation (0x0112), SHORT, 1 value: 6 = rotate 90.
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    exif += struct.pack("<I", 0)
    rotated = _with_segment(jpeg, 0xE1, exif)
    assert cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR).shape == (80, 48, 3)  # OpenCV's default
    out = compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", rotated)))
    assert out.shape == (48, 80, 3)


def test_corrupt_or_unsupported_compressed_images_are_refused():
    with pytest.raises(ImageConversionError, match="could not decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", b"\xff\xd8\xff garbage" * 10)))
    with pytest.raises(ImageConversionError, match="declares 50000x50000 pixels"):
        compressed_to_rgb(CompressedImage(format="png", data=array.array("B", png_declaring(50_000, 50_000))))
    # A real JPEG whose frame header claims 20000x20000: refused before OpenCV spends seconds and GB on it.
    jpeg = bytearray(cv2.imencode(".jpg", RGB)[1].tobytes())
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
    jpeg[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2
    with pytest.raises(ImageConversionError, match="declares 20000x20000 pixels"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array.array("B", bytes(jpeg))))
    bmp = cv2.imencode(".bmp", RGB)[1].tobytes()  # OpenCV reads it, compressed_image_transport never sends it
    with pytest.raises(ImageConversionError, match="not a JPEG or PNG"):
        compressed_to_rgb(CompressedImage(format="bmp", data=array.array("B", bmp)))
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg"))
    with pytest.raises(ImageConversionError, match="depth"):
        compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth png", data=array.array("B", b"x")))


def test_rgb_to_image_round_trip_keeps_header():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = rgb_to_image(RGB, header)
    assert (msg.width, msg.height, msg.step, msg.encoding) == (7, 5, 21, "rgb8")
    assert msg.header.frame_id == "cam" and stamp_to_ns(msg.header.stamp) == 12_000_000_345
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_roi_validation():
    assert roi_to_xywh(RegionOfInterest(x_offset=10, y_offset=20, width=30, height=40), 640, 480) == [10, 20, 30, 40]
    assert roi_to_xywh(RegionOfInterest(x_offset=0, y_offset=0, width=640, height=480), 640, 480) == [0, 0, 640, 480]
    with pytest.raises(ValueError, match="degenerate"):
        roi_to_xywh(RegionOfInterest(x_offset=10, y_offset=20, width=0, height=40), 640, 480)
    with pytest.raises(ValueError, match="beyond the 640x480 image"):
        roi_to_xywh(RegionOfInterest(x_offset=600, y_offset=20, width=50, height=40), 640, 480)
    with pytest.raises(ValueError, match="beyond"):
        roi_to_xywh(RegionOfInterest(x_offset=0, y_offset=4_000_000_000, width=5, height=5), 640, 480)


def test_detection_geometry_and_fields():
    header = Header(frame_id="cam")
    det = make_detection(header, [10.0, 20.0, 30.0, 40.0], 0.75, "cup", "abc")
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (25.0, 40.0)
    assert (det.bbox.size_x, det.bbox.size_y, det.bbox.center.theta) == (30.0, 40.0, 0.0)
    assert det.results[0].hypothesis.class_id == "cup" and det.results[0].hypothesis.score == 0.75
    assert det.id == "abc" and det.header.frame_id == "cam"
    assert detection_to_xywh(det) == [10.0, 20.0, 30.0, 40.0]


def test_frame_buffer_order_eviction_and_lookup():
    buf = FrameBuffer(3)
    frames = [buf.push(100 + i, Header(), RGB, float(i)) for i in range(5)]
    assert len(buf) == 3 and buf.newest() is frames[-1]
    assert buf.find(100) is None and buf.find(103) is frames[3]
    assert buf.stamp_range() == (102, 104)
    assert [f.seq for f in buf.after(2)] == [3, 4]
    with pytest.raises(ValueError):
        FrameBuffer(0)


def test_frame_buffer_spots_repeated_frames():
    buf = FrameBuffer(3)
    assert not buf.is_repeat(100)
    buf.push(100, Header(), RGB, 0.0)
    assert buf.is_repeat(100) and not buf.is_repeat(101)
    buf.push(0, Header(), RGB, 1.0)
    assert not buf.is_repeat(0)  # unstamped cameras are never taken for repeats


@pytest.mark.parametrize("box", [[280, 200, 40, 38], [0, 0, 320, 240], [300, 2, 20, 20], [-30, 100, 50, 50],
                                 [100, 300, 40, 40], [100, -100, 40, 40]],
                         ids=["bottom_right", "whole_image", "top_right", "past_the_left", "below", "above"])
def test_box_captions_stay_whole_inside_the_image(box):
    caption = "person 0.97"
    full = np.zeros((100, 400, 3), np.uint8)  # the caption alone, with room to spare
    cv2.putText(full, caption, (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    plain, captioned = np.zeros((240, 320, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)
    draw_box(plain, box, "", (0, 255, 0))
    draw_box(captioned, box, caption, (0, 255, 0))
    drawn = np.any(captioned != plain, axis=2).sum()
    # A few caption pixels may fall on the box's own line; a cut caption loses far more.
    assert drawn >= 0.9 * np.any(full > 0, axis=2).sum()
