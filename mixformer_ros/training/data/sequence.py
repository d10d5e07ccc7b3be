"""The sequence abstraction every reader returns: frame paths plus boxes, images read lazily."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class FrameReadError(RuntimeError):
    """A frame file is missing or cannot be decoded; the sampler skips it and counts it."""


class Sequence:
    """A tracking sequence: N frames, (N, 4) boxes x,y,w,h in pixels and an (N,) visibility mask.

    Subclasses set ``name``, ``boxes`` and ``visible`` and implement ``frame``.
    """

    name: str
    boxes: np.ndarray  # (N, 4) float32
    visible: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.boxes)

    def frame(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) image of frame `index`; raises FrameReadError when unreadable."""
        raise NotImplementedError


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Frames whose box is finite and has positive area."""
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode one image file as RGB uint8; a clear FrameReadError instead of OpenCV's None, also for
    a JPEG cut short, which OpenCV decodes with the missing rows filled in grey."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameReadError(f"cannot read frame {path}: {exc}") from exc
    # Entropy-coded data never holds a marker, so a whole JPEG has its end-of-image marker (FFD9)
    # after its last start-of-scan (FFDA); an EXIF thumbnail's pair comes before both.
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise FrameReadError(f"frame {path} is a truncated JPEG (no end-of-image marker after its last scan)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameReadError(f"cannot read frame {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FileSequence(Sequence):
    """A sequence stored as one image file per frame (GOT-10k, LaSOT, TrackingNet, OTB)."""

    def __init__(self, name: str, frames: list[Path], boxes: np.ndarray, visible: np.ndarray | None = None):
        if len(frames) != len(boxes):
            raise ValueError(f"{name}: {len(frames)} frames but {len(boxes)} boxes")
        self.name = name
        self._frames = frames
        self.boxes = boxes.astype(np.float32)
        ok = valid_boxes(self.boxes)
        self.visible = ok if visible is None else (visible.astype(bool) & ok)

    def frame(self, index: int) -> np.ndarray:
        return read_image_rgb(self._frames[index])
