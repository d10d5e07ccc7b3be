"""Fixed 2-D sine-cosine position tables, computed as the official constructor does (MAE convention).

All arithmetic is float32, as in the official code under NumPy 2; this reproduces its tables bit for bit.
"""
from __future__ import annotations

import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim): sin of all frequencies, then cos."""
    omega = np.arange(dim // 2, dtype=np.float32) / np.float32(dim / 2.0)
    omega = np.float32(1.0) / np.float32(10000) ** omega  # (dim/2,)
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float32), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """(grid_size**2, dim) float32 table, row-major over the patch grid.

    The first half of the channels encodes the column (x) and the second half the row (y),
    because the official code builds its mesh grid with the width axis first.
    """
    coords = np.arange(grid_size, dtype=np.float32)
    cols, rows = np.meshgrid(coords, coords)  # each (grid, grid); cols varies along x
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1).astype(np.float32)
