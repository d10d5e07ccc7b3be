"""Procedural tracking sequences: textured objects moving over textured backgrounds.

Used for fast tests and for training with no downloaded data. A sequence is fully
determined by its seed; frames are rendered on demand, so a dataset of thousands of
sequences costs only their trajectories in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .sequence import Sequence, read_image_rgb


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give varied but learnable sequences."""

    num_sequences: int = 1000
    num_frames: int = 60
    frame_size: tuple[int, int] = (320, 240)  # (W, H)
    min_object_size: int = 16
    max_object_size: int = 72
    max_speed: float = 6.0          # pixels per frame
    max_scale_rate: float = 0.02    # relative size change per frame
    num_distractors: tuple[int, int] = (0, 3)
    occluder_probability: float = 0.5
    camera_motion: float = 2.0      # background pan, pixels per frame
    seed: int = 0
    # Folders of real photos (e.g. the training sequences' frames). When given, half of the
    # backgrounds and object textures are cut from them, which brings real image statistics into
    # the synthetic data; without them the generator draws exactly as before.
    texture_dirs: tuple[str, ...] = ()


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Colour noise upsampled from a coarse grid: cheap texture with structure."""
    low = rng.integers(0, 256, size=(max(2, cells * h // w), cells, 3), dtype=np.uint8)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


class _Photos:
    """Random patches of real photos, used as background and object textures."""

    def __init__(self, dirs: tuple[str, ...]):
        self.paths = sorted(p for d in dirs for p in Path(d).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.paths:
            raise ValueError(f"no .jpg/.png images in texture_dirs {list(dirs)}")

    def patch(self, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
        """A crop of a random photo with the aspect ratio of (w, h), from a quarter of the largest one that
        fits up to that one, resized to (w, h)."""
        img = read_image_rgb(self.paths[int(rng.integers(len(self.paths)))])
        H, W = img.shape[:2]
        scale = rng.uniform(0.25, 1.0) * min(W / w, H / h)
        cw, ch = max(2, int(w * scale)), max(2, int(h * scale))
        x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
        return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _background(rng: np.random.Generator, w: int, h: int, photos: _Photos | None = None) -> np.ndarray:
    """Clutter like a real scene: smooth colour noise, partly desaturated, with random shapes and edges
    (or, with photos, half of the time a real photo patch)."""
    if photos is not None and rng.random() < 0.5:
        return photos.patch(rng, w, h)
    img = _smooth_noise(rng, w, h, int(rng.integers(4, 24))).astype(np.float32)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + rng.uniform(0.2, 1.0) * (img - gray)
    img = img.astype(np.uint8)
    for _ in range(int(rng.integers(5, 30))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(4, max(5, min(w, h) // 4)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + size, y + int(rng.integers(4, size + 5))), colour, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), size // 2, colour, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 4)))
    noise = rng.normal(0, rng.uniform(0, 10), size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, w: int, h: int, photos: _Photos | None = None) -> np.ndarray:
    """A random object texture: stripes, checkerboard or blobs with a dominant colour (or, with
    photos, half of the time a real photo patch)."""
    if photos is not None and rng.random() < 0.5:
        return photos.patch(rng, w, h)
    kind = rng.integers(3)
    base = rng.integers(0, 256, size=3).astype(np.float32)
    other = rng.integers(0, 256, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 14)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)
    elif kind == 1:
        cell = int(rng.integers(3, 10))
        t = ((xx // cell + yy // cell) % 2) > 0
    else:
        t = _smooth_noise(rng, w, h, int(rng.integers(2, 6)))[..., 0] > 128
    img = np.where(t[..., None], base, other)
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Alpha mask of the object: rectangle, ellipse or rounded blob (float32 in [0,1])."""
    kind = rng.integers(3)
    m = np.zeros((h, w), np.uint8)
    if kind == 0:
        m[:] = 255
    elif kind == 1:
        cv2.ellipse(m, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 255, -1)
    else:
        r = max(1, min(w, h) // 4)
        cv2.rectangle(m, (r, 0), (w - 1 - r, h - 1), 255, -1)
        cv2.rectangle(m, (0, r), (w - 1, h - 1 - r), 255, -1)
        for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
            cv2.circle(m, (cx, cy), r, 255, -1)
    return m.astype(np.float32) / 255.0


@dataclass
class _Sprite:
    texture: np.ndarray     # (h0, w0, 3) uint8 at reference size
    mask: np.ndarray        # (h0, w0) float32
    boxes: np.ndarray       # (N, 4) float32 x, y, w, h per frame


def _trajectory(rng: np.random.Generator, cfg: SyntheticConfig, size0: tuple[float, float]) -> np.ndarray:
    """Smooth random walk of an object box that bounces inside the frame."""
    fw, fh = cfg.frame_size
    w, h = size0
    x, y = rng.uniform(0, fw - w), rng.uniform(0, fh - h)
    vx, vy = rng.uniform(-cfg.max_speed, cfg.max_speed, size=2)
    boxes = np.zeros((cfg.num_frames, 4), np.float32)
    for i in range(cfg.num_frames):
        boxes[i] = (x, y, w, h)
        ax, ay, ds = rng.normal(0, cfg.max_speed * 0.15, size=2).tolist() + [rng.uniform(-1, 1) * cfg.max_scale_rate]
        vx = min(max(vx + ax, -cfg.max_speed), cfg.max_speed)
        vy = min(max(vy + ay, -cfg.max_speed), cfg.max_speed)
        s = float(np.exp(ds))
        lo, hi = cfg.min_object_size * 0.7, cfg.max_object_size * 1.4
        nw, nh = min(max(w * s, lo), hi), min(max(h * s, lo), hi)
        x, y = x + (w - nw) / 2 + vx, y + (h - nh) / 2 + vy
        w, h = nw, nh
        if x < 0 or x + w > fw:
            vx = -vx
            x = min(max(x, 0.0), fw - w)
        if y < 0 or y + h > fh:
            vy = -vy
            y = min(max(y, 0.0), fh - h)
    return boxes


class SyntheticSequence(Sequence):
    """One procedural sequence; frames are rendered lazily from the stored scene description."""

    def __init__(self, cfg: SyntheticConfig, index: int, photos: _Photos | None = None):
        rng = np.random.default_rng([cfg.seed, index])
        fw, fh = cfg.frame_size
        self.name = f"synthetic_{cfg.seed}_{index:05d}"
        self._cfg = cfg
        pad = int(cfg.camera_motion * cfg.num_frames) + 2
        self._background = _background(rng, fw + 2 * pad, fh + 2 * pad, photos)
        self._pad = pad
        self._pan = np.cumsum(rng.uniform(-cfg.camera_motion, cfg.camera_motion, size=(cfg.num_frames, 2)), axis=0)
        self._pan = np.clip(self._pan, -pad + 1, pad - 1)

        def sprite(target_like: _Sprite | None) -> _Sprite:
            w0 = float(rng.uniform(cfg.min_object_size, cfg.max_object_size))
            h0 = float(np.clip(w0 * np.exp(rng.uniform(-0.7, 0.7)), cfg.min_object_size * 0.7, cfg.max_object_size))
            if target_like is not None and rng.random() < 0.5:
                # A look-alike distractor: same texture, recoloured a little.
                tex = np.clip(target_like.texture.astype(np.int16) + rng.integers(-40, 40, size=3), 0, 255).astype(np.uint8)
                tex, msk = cv2.resize(tex, (int(w0), int(h0))), cv2.resize(target_like.mask, (int(w0), int(h0)))
            else:
                tex, msk = _texture(rng, int(w0), int(h0), photos), _mask(rng, int(w0), int(h0))
            return _Sprite(tex, msk, _trajectory(rng, cfg, (w0, h0)))

        self._target = sprite(None)
        lo, hi = cfg.num_distractors
        self._distractors = [sprite(self._target) for _ in range(int(rng.integers(lo, hi + 1)))]
        self._occluder: _Sprite | None = None
        if rng.random() < cfg.occluder_probability:
            occ = sprite(None)
            # Aim the occluder to cross the target's path halfway through the sequence.
            mid = cfg.num_frames // 2
            shift = self._target.boxes[mid, :2] + self._target.boxes[mid, 2:] / 2 - (occ.boxes[mid, :2] + occ.boxes[mid, 2:] / 2)
            occ.boxes[:, :2] += shift
            self._occluder = occ
        self.boxes = self._target.boxes.copy()
        self.visible = self._compute_visibility()

    def _compute_visibility(self) -> np.ndarray:
        """A frame's target is visible when an occluder hides less than 70 % of its box."""
        vis = np.ones(len(self.boxes), bool)
        fw, fh = self._cfg.frame_size
        for i, (x, y, w, h) in enumerate(self.boxes):
            inside_w = min(x + w, fw) - max(x, 0)
            inside_h = min(y + h, fh) - max(y, 0)
            if inside_w * inside_h < 0.3 * w * h:
                vis[i] = False
            if self._occluder is not None:
                ox, oy, ow, oh = self._occluder.boxes[i]
                iw = max(0.0, min(x + w, ox + ow) - max(x, ox))
                ih = max(0.0, min(y + h, oy + oh) - max(y, oy))
                if iw * ih > 0.7 * w * h:
                    vis[i] = False
        return vis

    def frame(self, index: int) -> np.ndarray:
        fw, fh = self._cfg.frame_size
        px, py = (self._pad + self._pan[index]).astype(int)
        img = self._background[py:py + fh, px:px + fw].astype(np.float32)
        layers = [*self._distractors, self._target]
        if self._occluder is not None:
            layers.append(self._occluder)
        for sp in layers:
            _paste(img, sp, index)
        return img.astype(np.uint8)


def _paste(img: np.ndarray, sp: _Sprite, index: int) -> None:
    """Alpha-blend a sprite, resized to its box for this frame, into img (in place)."""
    x, y, w, h = sp.boxes[index]
    iw, ih = max(1, int(round(w))), max(1, int(round(h)))
    x0, y0 = int(round(x)), int(round(y))
    tex = cv2.resize(sp.texture, (iw, ih), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.resize(sp.mask, (iw, ih), interpolation=cv2.INTER_LINEAR)[..., None]
    H, W = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + iw, W), min(y0 + ih, H)
    if xa >= xb or ya >= yb:
        return
    t = tex[ya - y0:yb - y0, xa - x0:xb - x0]
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0]
    img[ya:yb, xa:xb] = a * t + (1 - a) * img[ya:yb, xa:xb]


# Building a sequence (mostly its padded background) costs ~30 ms, rendering a frame from it ~0.3 ms;
# at ~1 MB a sequence, a training set of a few thousand stays cached for the life of a data worker.
CACHE_LIMIT = 4096


class SyntheticDataset:
    """A list-like collection of synthetic sequences (constructed lazily, cached by index)."""

    name = "synthetic"

    def __init__(self, cfg: SyntheticConfig = SyntheticConfig()):
        self.cfg = cfg
        self._photos = _Photos(cfg.texture_dirs) if cfg.texture_dirs else None
        self._cache: dict[int, SyntheticSequence] = {}

    # Spawned data workers receive the dataset pickled; the built sequences stay behind (up to
    # gigabytes) and each worker builds its own.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def __len__(self) -> int:
        return self.cfg.num_sequences

    def __getitem__(self, index: int) -> SyntheticSequence:
        if not 0 <= index < len(self):
            raise IndexError(index)
        seq = self._cache.get(index)
        if seq is None:
            seq = SyntheticSequence(self.cfg, index, self._photos)
            if len(self._cache) < CACHE_LIMIT:
                self._cache[index] = seq
        return seq
