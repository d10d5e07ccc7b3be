"""Turning a sampled pair into network inputs: jittered crops, augmentation, target box.

Crops are cut with the tracker's own `sample_target`, so a box predicted by a trained network
maps back to the frame exactly as it does at inference time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mixformer_ros.tracking.geometry import sample_target

from .readers import DataPathError
from .sampler import FrameRef, PairSample, PairSampler
from .sequence import FrameReadError


@dataclass(frozen=True)
class CropConfig:
    template_size: int = 112
    search_size: int = 224
    template_factor: float = 2.0
    search_factor: float = 4.5
    # Jitter of the box the search crop is centred on (pytracking convention): the scale is
    # multiplied by exp(N(0, scale_jitter)) and the centre moves by up to
    # center_jitter/2 * sqrt(w*h) in each direction.
    search_scale_jitter: float = 0.25
    search_center_jitter: float = 3.0
    template_scale_jitter: float = 0.0
    template_center_jitter: float = 0.0
    brightness_jitter: float = 0.2
    grayscale_probability: float = 0.05
    flip_probability: float = 0.5


def jitter_box(box: np.ndarray, scale_jitter: float, center_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Randomly rescale and shift an x,y,w,h box (the crop is centred on the result)."""
    x, y, w, h = (float(v) for v in box)
    size = np.exp(rng.normal(0.0, scale_jitter, size=2)) * (w, h)
    max_offset = math.sqrt(size[0] * size[1]) * center_jitter * 0.5
    cx, cy = x + w / 2 + rng.uniform(-0.5, 0.5) * 2 * max_offset, y + h / 2 + rng.uniform(-0.5, 0.5) * 2 * max_offset
    return np.array([cx - size[0] / 2, cy - size[1] / 2, size[0], size[1]], np.float32)


def box_in_crop(box: np.ndarray, crop_box: np.ndarray, resize_factor: float, output_size: int) -> np.ndarray:
    """Target box x,y,w,h (frame pixels) -> cx,cy,w,h normalised to a crop centred on crop_box.

    This is the inverse of the tracker's map-back: the crop centre is the centre of crop_box and
    one frame pixel becomes `resize_factor` crop pixels.
    """
    cx = box[0] + box[2] / 2 - (crop_box[0] + crop_box[2] / 2)
    cy = box[1] + box[3] / 2 - (crop_box[1] + crop_box[3] / 2)
    out = np.array([cx * resize_factor + output_size / 2, cy * resize_factor + output_size / 2,
                    box[2] * resize_factor, box[3] * resize_factor], np.float32)
    return out / output_size


def _augment(crops: list[np.ndarray], cfg: CropConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Photometric jitter per crop; grayscale applied to all crops of a pair alike."""
    gray = rng.random() < cfg.grayscale_probability
    out = []
    for c in crops:
        if gray:
            c = np.repeat(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        if cfg.brightness_jitter > 0:
            # One gain per channel (see docs/training.md), but one for all three on a gray crop, which stays gray.
            gain = rng.uniform(1 - cfg.brightness_jitter, 1 + cfg.brightness_jitter, size=1 if gray else 3)
            gain = gain.astype(np.float32)
            c = np.clip(c.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        out.append(c)
    return out


class PairDataset(torch.utils.data.Dataset):
    """A fixed-length, index-seeded stream of training pairs.

    Indices run across epochs: index `e * samples_per_epoch + i` is sample `i` of epoch `e`, drawn
    with the generator seeded by (seed, e, i). So a run resumed from a checkpoint, or split over DDP
    ranks, sees exactly the samples an uninterrupted single-process run would, and one loader (with
    its workers) can serve every epoch. The length is one epoch's.
    """

    def __init__(self, sampler: PairSampler, crop: CropConfig, samples_per_epoch: int, seed: int = 0):
        self.sampler = sampler
        self.crop = crop
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict:
        epoch, index = divmod(index, self.samples_per_epoch)
        skipped = 0
        for attempt in range(50):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            pair = self.sampler.sample(rng)
            try:
                sample = self._process(pair, rng)
            except FrameReadError:
                skipped += 1
                continue
            except ValueError:
                # The jittered crop fell outside the image or collapsed; draw again.
                continue
            sample["skipped"] = torch.tensor(skipped)
            return sample
        raise DataPathError(f"50 consecutive samples hit unreadable frames (index {index}); check the data paths")

    def _crop(self, ref: FrameRef, image: np.ndarray, size: int, factor: float,
              scale_j: float, center_j: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        centre_box = jitter_box(ref.box, scale_j, center_j, rng)
        crop = sample_target(image, centre_box, factor, size)
        return crop.image, box_in_crop(ref.box, centre_box, crop.resize_factor, size)

    def _process(self, pair: PairSample, rng: np.random.Generator) -> dict:
        c = self.crop
        images: dict[tuple[int, int], np.ndarray] = {}

        def image(ref: FrameRef) -> np.ndarray:
            key = (id(ref.sequence), ref.index)
            if key not in images:
                images[key] = ref.sequence.frame(ref.index)
            return images[key]

        templates = [
            self._crop(t, image(t), c.template_size, c.template_factor, c.template_scale_jitter, c.template_center_jitter, rng)[0]
            for t in pair.templates
        ]
        search, box = self._crop(pair.search, image(pair.search), c.search_size, c.search_factor,
                                 c.search_scale_jitter, c.search_center_jitter, rng)
        crops = _augment([*templates, search], c, rng)
        if rng.random() < c.flip_probability:
            crops = [np.ascontiguousarray(x[:, ::-1]) for x in crops]
            box = box.copy()
            box[0] = 1.0 - box[0]
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)  # (3, H, W) uint8
        return {
            "template": to_t(crops[0]),
            "online_template": to_t(crops[1] if len(templates) > 1 else crops[0]),
            "search": to_t(crops[-1]),
            "search_box": torch.from_numpy(box),              # (4,) cx, cy, w, h normalised
            "label": torch.tensor(float(pair.positive)),
        }
