"""Box and caption drawing shared by the node's debug image and the demo video."""

from __future__ import annotations

import cv2
import numpy as np

# Colours as (R, G, B); callers drawing on BGR images pass bgr=True.
STATE_COLOURS = {
    "TRACKING": (40, 220, 40),
    "LOST": (240, 60, 40),
    "IDLE": (200, 200, 200),
    "TRUTH": (250, 200, 30),
}


def draw_box(
    image: np.ndarray,
    box_xywh,
    caption: str,
    colour: tuple[int, int, int],
    bgr: bool = False,
    thickness: int = 2,
) -> None:
    """Draw a rectangle with a caption above it (below it at the top edge), in place on an (H, W, 3)
    uint8 image; the caption is moved inside the image where the box touches its edges."""
    if bgr:
        colour = colour[::-1]
    x, y, w, h = (int(round(v)) for v in box_xywh)
    cv2.rectangle(image, (x, y), (x + max(w, 1), y + max(h, 1)), colour, thickness)
    if caption:
        (tw, th), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        height, width = image.shape[:2]
        tx = min(max(x, 0), max(width - tw, 0))
        ty = y - 6 if y - 6 - th >= 0 else y + h + th + 6
        ty = min(max(ty, th), height - baseline - 1)
        cv2.putText(image, caption, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def draw_banner(image: np.ndarray, text: str, bgr: bool = False) -> None:
    """Write a status line into the top-left corner, on a dark strip so it stays readable. Draw it before
    the boxes: a caption near the top would otherwise disappear under the strip."""
    colour = (255, 255, 255)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(image, (0, 0), (tw + 10, th + 10), (0, 0, 0), -1)
    cv2.putText(image, text, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
