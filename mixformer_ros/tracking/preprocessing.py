"""uint8 RGB crops -> normalised float32 network input (ImageNet statistics, like the official tracker)."""
from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize_crops(*crops: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB crops of one size -> (N, 3, H, W) float32, (x / 255 - mean) / std."""
    batch = np.stack(crops).astype(np.float32)  # (N, H, W, 3)
    batch = (batch / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # (N, 3, H, W)
