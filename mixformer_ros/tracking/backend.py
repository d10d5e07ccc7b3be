"""The seam between the tracker and whatever runs the network."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """Runs the network for the tracker.

    Crops are uint8 RGB (H, W, 3), C-contiguous; the backend normalises them itself. Templates
    change only on template updates, so a backend encodes them once in ``set_templates`` and
    runs only the search side per frame.
    """

    name: str
    device: str

    def set_templates(self, template: np.ndarray, online_template: np.ndarray) -> None: ...

    def predict(self, search: np.ndarray) -> tuple[np.ndarray, float]:
        """Returns (box (4,) float32 cx, cy, w, h normalised to the search crop, score logit)."""
        ...


def run_once_on_blank_crops(backend: Backend, template_size: int, search_size: int) -> None:
    """Encode blank templates and predict on a blank search crop once, so that the first tracked frame
    pays none of the one-time costs: lazy imports (the first call of the PyTorch cached-attention
    operator imports torch._dynamo, ~1 s on a 2-core CPU), CUDA libraries and memory set up on the
    first run. A node fed at 15 Hz skipped the first 13-16 frames of its first track without it.
    Backends call this when built and then forget the blank templates."""
    template = np.zeros((template_size, template_size, 3), np.uint8)
    backend.set_templates(template, template)
    backend.predict(np.zeros((search_size, search_size, 3), np.uint8))
