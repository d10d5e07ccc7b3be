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
