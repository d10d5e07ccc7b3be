"""The online single-object tracker of MixFormerV2, framework-free.

Per frame: crop a search region around the previous box, run the network, map the box back
(optionally damping its size change, off by default), clip it, and maintain the online template:
the best-scoring crop (score > 0.5) since the last update replaces the online template every
``update_interval`` frames; when no frame qualified, the initial template comes back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backend import Backend
from .geometry import clip_box, map_box_back, sample_target
from .presets import TrackerSettings

CLIP_MARGIN = 10  # px; the official tracker keeps boxes at least this large and this far inside


@dataclass(frozen=True)
class TrackResult:
    box: list[float]  # x, y, w, h in frame pixels
    score: float  # confidence in [0, 1]
    frame_index: int  # frames tracked since initialize (1 = first tracked frame)
    templates_updated: bool  # the online template changed after this frame


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "expected an RGB uint8 image of shape (H, W, 3), got "
            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")


def check_box(box, height: int, width: int) -> list[float]:
    """A finite box with positive size that overlaps the image."""
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box must be 4 finite numbers x, y, w, h; got {list(box)}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ValueError(f"box width and height must be > 0; got {values}")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"box {values} does not overlap the {width}x{height} image")
    return values


def _damp_size(box: list[float], previous: list[float], rate: float) -> list[float]:
    """``box``'s centre with a width and height ``rate`` of the way from ``previous``'s to ``box``'s."""
    w = previous[2] + rate * (box[2] - previous[2])
    h = previous[3] + rate * (box[3] - previous[3])
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return [cx - w / 2, cy - h / 2, w, h]


class MixFormerTracker:
    def __init__(self, backend: Backend, template_size: int, search_size: int, settings: TrackerSettings):
        self.backend = backend
        self.template_size = template_size
        self.search_size = search_size
        self.settings = settings
        self.state: list[float] | None = None
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the track's frames: its box is in their pixels
        self.frame_index = 0
        # Frame indices the current templates were cropped from (0 = the initial frame).
        self.online_template_source = 0

    @property
    def initialized(self) -> bool:
        return self.state is not None

    def _crop_template(self, image: np.ndarray, box) -> np.ndarray:
        return sample_target(image, box, self.settings.template_factor, self.template_size).image

    def initialize(self, image: np.ndarray, box_xywh) -> None:
        """Start a new track; a bad image or box raises ValueError and leaves the current track as it was."""
        check_image(image)
        box = check_box(box_xywh, *image.shape[:2])
        template = self._crop_template(image, box)
        self.backend.set_templates(template, template)
        self._template = template
        self._online_template = template
        self._best_crop, self._best_source, self._best_score = template, 0, -1.0
        self.online_template_source = 0
        self.state = box
        self.frame_size = image.shape[:2]
        self.frame_index = 0

    def track(self, image: np.ndarray) -> TrackResult:
        """Follow the target into the next frame; a frame of another size than the track's raises
        ValueError (the box is in the old frame's pixels) and leaves the track as it was."""
        if self.state is None:
            raise RuntimeError("track() called before initialize()")
        check_image(image)
        H, W = image.shape[:2]
        if (H, W) != self.frame_size:
            raise ValueError(f"frame size changed from {self.frame_size[1]}x{self.frame_size[0]} to {W}x{H} during the "
                             "track; its box is in the old frame's pixels: initialize() again")
        crop = sample_target(image, self.state, self.settings.search_factor, self.search_size)
        box_norm, logit = self.backend.predict(crop.image)
        # Same float32 arithmetic as the official tracker before it leaves the tensor world.
        box_px = np.asarray(box_norm, dtype=np.float32) * np.float32(self.search_size) / np.float32(crop.resize_factor)
        if not np.all(np.isfinite(box_px)) or not math.isfinite(logit):
            raise RuntimeError(f"the network returned a non-finite prediction ({box_norm}, {logit}); track unchanged")
        score = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
        self.frame_index += 1
        box = map_box_back(box_px.tolist(), self.state, self.search_size, crop.resize_factor)
        if self.settings.size_update_rate < 1.0:
            box = _damp_size(box, self.state, self.settings.size_update_rate)
        self.state = clip_box(box, H, W, margin=CLIP_MARGIN)

        self._best_score *= self.settings.max_score_decay
        if score > 0.5 and score > self._best_score:
            self._best_crop, self._best_source, self._best_score = self._crop_template(image, self.state), self.frame_index, score
        updated = False
        if self.frame_index % self.settings.update_interval == 0:
            if self._best_crop is not self._online_template:
                self._online_template = self._best_crop
                self.backend.set_templates(self._template, self._online_template)
                updated = True
            self.online_template_source = self._best_source
            self._best_crop, self._best_source, self._best_score = self._template, 0, -1.0
        return TrackResult(box=list(self.state), score=score, frame_index=self.frame_index, templates_updated=updated)
