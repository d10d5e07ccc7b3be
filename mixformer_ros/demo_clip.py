"""A short procedural video for the demo: a textured target moving over a panning background.

Generated from a seed, so the demo needs no data files and its ground truth is exact. The
target changes size, shares the scene with a distractor of similar size and is briefly
dimmed by a passing translucent bar, so a tracker has something to do. No ROS imports: training and evaluation code may reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ClipConfig:
    num_frames: int = 150
    width: int = 640
    height: int = 480
    seed: int = 7
    target_size: tuple[int, int] = (72, 56)  # (w, h) at scale 1
    distractor: bool = True


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour noise twice the frame size, so the camera can pan across it."""
    coarse = rng.integers(40, 215, size=(12, 16, 3), dtype=np.uint8)
    bg = cv2.resize(coarse, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 6, size=bg.shape)
    return np.clip(bg + fine, 0, 255).astype(np.uint8)


def _sprite(w: int, h: int, colours: tuple[tuple[int, int, int], tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A rounded patch with diagonal stripes and a ring; returns (BGR pixels, alpha mask)."""
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx + yy) // 6) % 2 == 0
    pix = np.where(stripes[..., None], np.array(colours[0], np.uint8), np.array(colours[1], np.uint8))
    cv2.circle(pix, (w // 2, h // 2), min(w, h) // 4, (255, 255, 255), 3)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
    return pix, mask


def _paste(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Alpha-paste, clipped to the frame."""
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    region = frame[y0:y1, x0:x1]
    m = mask[y0 - y:y1 - y, x0 - x:x1 - x, None] > 0
    region[:] = np.where(m, sprite[y0 - y:y1 - y, x0 - x:x1 - x], region)


def make_clip(config: ClipConfig = ClipConfig()) -> tuple[list[np.ndarray], np.ndarray]:
    """Returns (frames as BGR uint8 (H, W, 3), ground-truth boxes (N, 4) x, y, w, h in pixels)."""
    rng = np.random.default_rng(config.seed)
    W, H = config.width, config.height
    bg = _background(rng, W, H)
    tw, th = config.target_size
    target_colours = ((30, 60, 220), (240, 200, 40))
    side = (tw + th) // 2
    cells = (np.add.outer(np.arange(side) // 8, np.arange(side) // 8) % 2).astype(bool)  # (side, side)
    distractor = np.where(cells[..., None], np.uint8([40, 170, 60]), np.uint8([230, 230, 230])).astype(np.uint8)
    frames, boxes = [], []
    for i in range(config.num_frames):
        t = i / max(config.num_frames - 1, 1)
        # Camera pan: the background window drifts diagonally.
        ox, oy = int(W * 0.5 * t), int(H * 0.3 * np.sin(np.pi * t))
        frame = bg[oy:oy + H, ox:ox + W].copy()

        # Distractor: a checkered square of about the target's size, moving the other way along
        # the top edge, above the band the target moves in.
        dx = int(W * (0.85 - 0.7 * t))
        dy = int(H * 0.07)
        side = (tw + th) // 2
        if config.distractor:
            _paste(frame, distractor, np.full((side, side), 255, np.uint8), dx - side // 2, dy - side // 2)

        # Target: Lissajous path, size breathing by +-25 %.
        scale = 1.0 + 0.25 * np.sin(2 * np.pi * t)
        w, h = int(round(tw * scale)), int(round(th * scale))
        cx = W * (0.5 + 0.32 * np.sin(2 * np.pi * t))
        cy = H * (0.55 + 0.2 * np.sin(4 * np.pi * t + 0.5))
        x, y = int(round(cx - w / 2)), int(round(cy - h / 2))
        sprite, mask = _sprite(w, h, target_colours)
        _paste(frame, sprite, mask, x, y)

        # A translucent grey bar sweeps across once, dimming part of the scene for a few frames.
        bar_x = int(W * (2.5 * t - 0.8))
        x0, x1 = max(bar_x, 0), min(bar_x + 24, W)
        if x1 > x0:
            frame[:, x0:x1] = (frame[:, x0:x1] // 2 + 64).astype(np.uint8)

        frames.append(frame)
        boxes.append([x, y, w, h])
    return frames, np.asarray(boxes, dtype=np.float64)
