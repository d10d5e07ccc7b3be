"""Crop geometry of the official tracker: square crops around the target, zero padding,
OpenCV INTER_LINEAR resize, and mapping predictions back to frame pixels.

These functions reproduce the official arithmetic exactly (Python's round-half-to-even,
the extra right/bottom padding column/row), because crops are compared bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Crop:
    """A square crop resized to ``image.shape[0]``; ``resize_factor`` = output size / crop side."""

    image: np.ndarray  # (S, S, 3) uint8
    resize_factor: float


def crop_side(box_xywh, factor: float) -> int:
    x, y, w, h = box_xywh
    return math.ceil(math.sqrt(w * h) * factor)


def sample_target(image: np.ndarray, box_xywh, factor: float, output_size: int) -> Crop:
    """Square crop of side ceil(sqrt(w*h) * factor) centred on the box, padded with zeros where it
    leaves the image, resized to ``output_size``.

    Like the official code, the padding on the right/bottom is one pixel larger than needed and the
    crop one pixel smaller, whenever the crop reaches the right/bottom image edge.
    """
    x, y, w, h = box_xywh
    side = crop_side(box_xywh, factor)
    if side < 1:
        raise ValueError(f"box {list(box_xywh)} is too small to crop")
    x1 = round(x + 0.5 * w - side * 0.5)
    y1 = round(y + 0.5 * h - side * 0.5)
    x2, y2 = x1 + side, y1 + side
    H, W = image.shape[:2]
    pad_left, pad_top = max(0, -x1), max(0, -y1)
    pad_right, pad_bottom = max(x2 - W + 1, 0), max(y2 - H + 1, 0)
    patch = image[y1 + pad_top:y2 - pad_bottom, x1 + pad_left:x2 - pad_right]
    # The official one-pixel-smaller crop at the right/bottom edge leaves nothing of a box that only
    # touches the last column or row, or of an image one pixel wide or high.
    if patch.size == 0 or patch.shape[0] + pad_top + pad_bottom != side or patch.shape[1] + pad_left + pad_right != side:
        raise ValueError(f"box {list(box_xywh)} leaves nothing to crop in the {W}x{H} image (it lies outside it, "
                         "or only on its last row or column)")
    padded = cv2.copyMakeBorder(patch, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT)
    resized = cv2.resize(padded, (output_size, output_size), interpolation=cv2.INTER_LINEAR)
    return Crop(resized, output_size / side)


def map_box_back(pred_cxcywh_px, prev_box_xywh, search_size: int, resize_factor: float) -> list[float]:
    """Box predicted in search-crop pixels (already divided by resize_factor) -> frame x, y, w, h.

    The crop is centred on the previous box, so its top-left in frame pixels is the previous
    centre minus half the crop side.
    """
    cx_prev = prev_box_xywh[0] + 0.5 * prev_box_xywh[2]
    cy_prev = prev_box_xywh[1] + 0.5 * prev_box_xywh[3]
    cx, cy, w, h = pred_cxcywh_px
    half_side = 0.5 * search_size / resize_factor
    cx_real = cx + (cx_prev - half_side)
    cy_real = cy + (cy_prev - half_side)
    return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]


def clip_box(box_xywh, height: int, width: int, margin: float = 0) -> list[float]:
    """Keep the box inside the image and at least ``margin`` pixels wide and high."""
    x1, y1, w, h = box_xywh
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), width - margin)
    x2 = min(max(margin, x2), width)
    y1 = min(max(0, y1), height - margin)
    y2 = min(max(margin, y2), height)
    return [x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)]
