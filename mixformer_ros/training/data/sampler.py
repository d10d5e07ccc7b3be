"""Pair sampling in the pytracking style: template frame(s) and a search frame from one sequence.

A dataset is drawn by weight, then a sequence, then a base frame; the templates come from at
most `max_gap` frames before it and the search frame from at most `max_gap` after it (the
"causal" mode MixFormer trains with). Only frames whose target is visible are eligible. When a
draw fails (too few visible frames), the gap grows and the draw is retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .readers import DataPathError
from .sequence import Sequence


@dataclass(frozen=True)
class SamplerConfig:
    num_template_frames: int = 2      # static template + online template
    max_gap: int = 200
    gap_increase: int = 5
    max_attempts: int = 100
    # Probability of a negative pair for the score stage (search frame from another sequence).
    negative_probability: float = 0.0


@dataclass
class FrameRef:
    """Which frame of which sequence, and the target box in it (x, y, w, h, pixels)."""

    sequence: Sequence
    index: int
    box: np.ndarray


@dataclass
class PairSample:
    templates: list[FrameRef]
    search: FrameRef
    positive: bool


def _visible_indices(seq: Sequence, lo: int, hi: int) -> np.ndarray:
    lo, hi = max(lo, 0), min(hi, len(seq))
    if lo >= hi:
        return np.empty(0, np.int64)
    return lo + np.flatnonzero(seq.visible[lo:hi])


class PairSampler:
    """Draws PairSamples from weighted datasets (each a list-like of Sequence)."""

    def __init__(self, datasets: list, weights: list[float] | None = None, cfg: SamplerConfig = SamplerConfig()):
        if not datasets:
            raise ValueError("PairSampler needs at least one dataset")
        w = np.asarray(weights if weights is not None else [1.0] * len(datasets), np.float64)
        if len(w) != len(datasets) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"dataset weights {list(w)} do not match {len(datasets)} datasets or are not positive")
        if cfg.negative_probability > 0 and sum(len(ds) for ds, p in zip(datasets, w) if p > 0) < 2:
            raise ValueError("negative pairs need at least two sequences to draw from")
        self.datasets = datasets
        self.probs = w / w.sum()
        self.cfg = cfg

    def _draw_sequence(self, rng: np.random.Generator) -> tuple[tuple[int, int], Sequence]:
        """A sequence and its (dataset, index) key: readers may build a new object on every call."""
        d = int(rng.choice(len(self.datasets), p=self.probs))
        i = int(rng.integers(len(self.datasets[d])))
        return (d, i), self.datasets[d][i]

    def _negative_search(self, key: tuple[int, int], rng: np.random.Generator) -> FrameRef:
        """A visible target of another sequence than ``key``'s."""
        for _ in range(self.cfg.max_attempts):
            other_key, other = self._draw_sequence(rng)
            vis = np.flatnonzero(other.visible)
            if other_key != key and len(vis):
                j = int(rng.choice(vis))
                return FrameRef(other, j, other.boxes[j])
        raise DataPathError(f"no other sequence with a visible target after {self.cfg.max_attempts} draws")

    def sample(self, rng: np.random.Generator) -> PairSample:
        cfg = self.cfg
        for _ in range(cfg.max_attempts):
            key, seq = self._draw_sequence(rng)
            pair = self._sample_in_sequence(seq, rng)
            if pair is None:
                continue
            templates, search = pair
            if cfg.negative_probability > 0 and rng.random() < cfg.negative_probability:
                # A negative: the search crop shows another sequence's target.
                return PairSample(templates, self._negative_search(key, rng), positive=False)
            return PairSample(templates, search, positive=True)
        raise DataPathError(
            f"no valid pair after {cfg.max_attempts} attempts: the datasets have too few frames with a visible target "
            "(empty image folders, unreadable annotations or targets flagged invisible; see the warnings above)"
        )

    def _sample_in_sequence(self, seq: Sequence, rng: np.random.Generator) -> tuple[list[FrameRef], FrameRef] | None:
        n_t = self.cfg.num_template_frames
        vis = np.flatnonzero(seq.visible)
        if len(vis) == 0:
            return None
        if len(seq) == 1:
            # A still image: every frame of the pair is the same picture, jitter makes them differ.
            ref = FrameRef(seq, 0, seq.boxes[0])
            return [ref] * n_t, ref
        if len(vis) < 2:
            return None
        base_candidates = _visible_indices(seq, n_t - 1, len(seq) - 1)
        if len(base_candidates) == 0:
            return None
        gap = self.cfg.max_gap
        for _ in range(10):
            base = int(rng.choice(base_candidates))
            prev = _visible_indices(seq, base - gap, base)
            nxt = _visible_indices(seq, base + 1, base + gap + 1)
            if len(nxt) > 0:
                extra = rng.choice(prev, size=n_t - 1, replace=len(prev) < n_t - 1) if (n_t > 1 and len(prev)) else []
                t_idx = [base] + sorted(int(i) for i in extra)
                if len(t_idx) < n_t:
                    t_idx += [base] * (n_t - len(t_idx))
                s_idx = int(rng.choice(nxt))
                return [FrameRef(seq, i, seq.boxes[i]) for i in t_idx], FrameRef(seq, s_idx, seq.boxes[s_idx])
            gap += self.cfg.gap_increase
        return None
