"""Score result sets against sequences and lay the numbers out as tables."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import Sequence
from .metrics import aggregate_got10k, aggregate_ope, got10k_ao_sr, ope_metrics, valid_gt_mask
from .results import SequenceResult, read_result

SCALAR_KEYS = ("success_auc", "precision", "norm_precision", "op50", "op75")
COLUMN_TITLES = {
    "success_auc": "AUC",
    "precision": "Prec@20",
    "norm_precision": "NormPrec",
    "op50": "OP50",
    "op75": "OP75",
    "ao": "AO",
    "fps": "FPS",
}


@dataclass
class Evaluation:
    """Per-sequence and overall numbers of one tracker."""

    tracker: str
    per_sequence: dict[str, dict] = field(default_factory=dict)
    overall: dict = field(default_factory=dict)


def is_scorable(seq: Sequence) -> bool:
    """Whether a sequence has ground truth after its first frame (the GOT-10k test split has none)."""
    return bool(valid_gt_mask(seq.gt, seq.absent)[1:].any())


def score_result(result: SequenceResult, seq: Sequence, invalid: str = "exclude") -> dict:
    """OPE metrics, GOT-10k AO/SR and speed of one sequence result."""
    if result.boxes.shape[0] != len(seq):
        raise ValueError(
            f"{seq.name}: result has {result.boxes.shape[0]} boxes for {len(seq)} frames"
        )
    if not is_scorable(seq):
        raise ValueError(f"{seq.name}: no ground truth after the first frame, so nothing to score "
                         "(the GOT-10k test split is scored by its evaluation server)")
    boxes = result.boxes.copy()
    boxes[0] = seq.gt[0]  # the toolkits score frame 0 as the given box
    metrics = ope_metrics(boxes, seq.gt, seq.absent, invalid=invalid)
    got = got10k_ao_sr(boxes, seq.gt, seq.absent)
    metrics.update(ao=got["ao"], sr50=got["sr50"], sr75=got["sr75"], ious=got["ious"])
    metrics["fps"] = _fps(result.times)
    return metrics


def _update_times(times) -> np.ndarray:
    """Seconds of each update the tracker ran (initialisation and skipped frames, NaN, excluded)."""
    if times is None:
        return np.empty(0)
    t = np.asarray(times[1:], dtype=np.float64)
    return t[np.isfinite(t)]


def _fps(times) -> float:
    """Frames per second over the tracked frames."""
    t = _update_times(times)
    total = float(np.sum(t))
    return len(t) / total if total > 0 else float("nan")


def evaluate_results(
    tracker: str, results: list[SequenceResult], sequences: list[Sequence], invalid: str = "exclude"
) -> Evaluation:
    """Score results (matched to sequences by name) and aggregate them."""
    by_name = {r.name: r for r in results}
    evaluation = Evaluation(tracker)
    for seq in sequences:
        if seq.name not in by_name:
            raise KeyError(f"tracker {tracker!r} has no result for sequence {seq.name!r}")
        evaluation.per_sequence[seq.name] = score_result(by_name[seq.name], seq, invalid)
    scored = list(evaluation.per_sequence.values())
    evaluation.overall = aggregate_ope(scored)
    got = aggregate_got10k(scored)
    evaluation.overall.update(ao=got["ao"], sr50=got["sr50"], sr75=got["sr75"])
    all_times = [_update_times(by_name[seq.name].times) for seq in sequences]  # the scored ones only
    frames = sum(len(t) for t in all_times)
    total = float(sum(np.sum(t) for t in all_times))
    evaluation.overall["fps"] = frames / total if total > 0 else float("nan")
    return evaluation


def evaluate_tracker_dir(
    tracker_dir: Path, sequences: list[Sequence], invalid: str = "exclude", name: str | None = None
) -> Evaluation:
    """Score a results folder written by :func:`runners.run_dataset` (or by another toolkit);
    ``name`` (default: the folder's) labels it in tables and plots."""
    tracker_dir = Path(tracker_dir).resolve()
    results = [read_result(tracker_dir, seq.name) for seq in sequences]
    return evaluate_results(name or tracker_dir.name, results, sequences, invalid)


def plain_json(value):
    """A copy ready for ``json.dumps(allow_nan=False)``: arrays as lists, NumPy scalars as Python
    numbers, NaN and infinities (no frames, no times) as null."""
    if isinstance(value, dict):
        return {key: plain_json(v) for key, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _cell(value: float, key: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.1f}" if key == "fps" else f"{value:.3f}"


def summary_rows(evaluations: list[Evaluation], keys=SCALAR_KEYS + ("ao", "fps")) -> list[list[str]]:
    """Header + one row per tracker with its overall numbers."""
    rows = [["tracker"] + [COLUMN_TITLES.get(k, k) for k in keys]]
    for ev in evaluations:
        rows.append([ev.tracker] + [_cell(ev.overall.get(k), k) for k in keys])
    return rows


def per_sequence_rows(evaluations: list[Evaluation], keys=("success_auc", "precision")) -> list[list[str]]:
    """Header + one row per sequence, with each tracker's ``keys`` side by side."""
    header = ["sequence", "scored frames"]
    for ev in evaluations:
        header += [f"{ev.tracker} {COLUMN_TITLES.get(k, k)}" for k in keys]
    names = list(evaluations[0].per_sequence) if evaluations else []
    rows = [header]
    for name in names:
        row = [name, str(evaluations[0].per_sequence[name]["num_frames"])]
        for ev in evaluations:
            row += [_cell(ev.per_sequence[name].get(k), k) for k in keys]
        rows.append(row)
    overall = ["**overall**", str(sum(int(r[1]) for r in rows[1:]))]
    for ev in evaluations:
        overall += [_cell(ev.overall.get(k), k) for k in keys]
    rows.append(overall)
    return rows


def to_markdown(rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header, body = rows[0], rows[1:]
    lines = [line(header), "|" + "---|" * len(header)] + [line(r) for r in body]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([c.replace("**", "") for c in row])
    return buf.getvalue()
