"""Tracking results on disk in the got10k / pysot text format.

Layout of a result set (one folder per tracker)::

    <results_dir>/<tracker>/<sequence>.txt         one "x,y,w,h" line per frame, frame 0 = init box
    <results_dir>/<tracker>/times/<sequence>_time.txt   seconds spent on each frame
    <results_dir>/<tracker>/scores/<sequence>_score.txt  optional confidence per frame

Numbers are written with Python's shortest round-trip representation, so reading a file back
gives bit-identical floats; reports can be recomputed from the files without rerunning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import replace_atomically
from .datasets import read_box_file


@dataclass
class SequenceResult:
    """What a tracker produced on one sequence."""

    name: str
    boxes: np.ndarray  # (N, 4) x, y, w, h; row 0 is the initial box
    times: np.ndarray | None = None  # (N,) seconds per frame (row 0 = initialisation)
    scores: np.ndarray | None = None  # (N,) confidence, NaN where the tracker gives none


def _fmt(value: float) -> str:
    value = float(value)
    return "nan" if np.isnan(value) else repr(value)


def write_column(path: Path, values) -> None:
    """One number per line."""
    text = "".join(_fmt(v) + "\n" for v in np.asarray(values, dtype=np.float64).ravel())
    replace_atomically(path, lambda tmp: tmp.write_text(text))  # an interrupted run never leaves half a file


def read_column(path: Path) -> np.ndarray:
    """Inverse of :func:`write_column`."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return np.array([float(v) for v in lines], dtype=np.float64)


def write_boxes(path: Path, boxes) -> None:
    """``x,y,w,h`` per line, comma separated, as got10k and pysot write them."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    text = "".join(",".join(_fmt(v) for v in row) + "\n" for row in boxes)
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def read_boxes(path: Path) -> np.ndarray:
    """Read a results file (comma, tab or space separated) as an ``(N, 4)`` float64 array."""
    boxes = read_box_file(path)
    if boxes.shape[1] != 4:
        raise ValueError(f"{path}: results must have 4 values per line, found {boxes.shape[1]}")
    return boxes


def result_paths(tracker_dir: Path, sequence: str) -> dict[str, Path]:
    tracker_dir = Path(tracker_dir)
    return {
        "boxes": tracker_dir / f"{sequence}.txt",
        "times": tracker_dir / "times" / f"{sequence}_time.txt",
        "scores": tracker_dir / "scores" / f"{sequence}_score.txt",
    }


def write_result(tracker_dir: Path, result: SequenceResult) -> Path:
    """Write times / scores when present (removing those of an earlier result when not), then the
    boxes (last: their file marks the result done); returns the boxes file."""
    paths = result_paths(tracker_dir, result.name)
    for key, values in (("times", result.times), ("scores", result.scores)):
        if values is not None:
            write_column(paths[key], values)
        else:
            paths[key].unlink(missing_ok=True)
    write_boxes(paths["boxes"], result.boxes)
    return paths["boxes"]


def read_result(tracker_dir: Path, sequence: str) -> SequenceResult:
    """Read one sequence's result; missing times or scores read as None."""
    paths = result_paths(tracker_dir, sequence)
    if not paths["boxes"].exists():
        raise FileNotFoundError(f"no result for sequence {sequence!r}: {paths['boxes']} is missing")
    times = read_column(paths["times"]) if paths["times"].exists() else None
    scores = read_column(paths["scores"]) if paths["scores"].exists() else None
    return SequenceResult(sequence, read_boxes(paths["boxes"]), times, scores)


def has_result(tracker_dir: Path, sequence: str) -> bool:
    return result_paths(tracker_dir, sequence)["boxes"].exists()
