"""One-pass-evaluation (OPE) metrics as pure NumPy functions over ``(N, 4)`` box arrays.

Boxes are ``x, y, w, h`` in pixels (top-left corner, width, height). The conventions are the
ones the standard toolkits (got10k, pysot, pytracking, the LaSOT toolkit) share, so numbers
computed here can be put next to published ones:

* success curve: fraction of frames whose IoU is *strictly above* each of the 21 thresholds
  0, 0.05, ..., 1; success AUC is the mean of that curve;
* precision curve: fraction of frames whose centre error is *at most* 0, 1, ..., 50 px;
  "precision" is the value at 20 px;
* normalised precision: centre error divided component-wise by the ground-truth ``w, h``
  (pytracking / LaSOT), curve over 0, 0.01, ..., 0.5, reported at 0.20;
* OP50 / OP75: fraction of frames with IoU above 0.5 / 0.75;
* GOT-10k AO / SR: mean IoU and success rates over the visible frames, first frame excluded.

Frames without a valid ground truth (flagged absent, any NaN, or ``w <= 0`` or ``h <= 0``) follow
the ``invalid`` rule of :func:`ope_metrics`: ``"exclude"`` (default) drops them from every
average, ``"fail"`` keeps them in the denominator as failures at every threshold (what pysot and
pytracking do on LaSOT). A NaN prediction never overlaps anything and has an infinite centre
error; one with no area never overlaps anything, but its centre is scored as the toolkits do.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_ERROR_THRESHOLDS_PX = np.arange(0, 51, dtype=np.float64)
NORM_CENTER_ERROR_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
PRECISION_AT_PX = 20
NORM_PRECISION_AT = 0.20
INVALID_RULES = ("exclude", "fail")

_NORM_PRECISION_INDEX = int(round(NORM_PRECISION_AT * 100))


def as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as a float64 ``(N, 4)`` array, or raise a ValueError that names it."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as x, y, w, h; got {arr.shape}")
    return arr


def valid_gt_mask(gt_xywh, absent=None) -> np.ndarray:
    """True where the ground truth is usable: finite, with positive size, not flagged absent."""
    gt = as_boxes(gt_xywh, "gt_xywh")
    valid = np.all(np.isfinite(gt), axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if absent is not None:
        absent = np.asarray(absent, dtype=bool).reshape(-1)
        if absent.shape[0] != gt.shape[0]:
            raise ValueError(f"absent has {absent.shape[0]} flags for {gt.shape[0]} frames")
        valid &= ~absent
    return valid


def box_iou(a_xywh, b_xywh) -> np.ndarray:
    """Intersection over union per row; 0 where either box is NaN or has no area."""
    a = as_boxes(a_xywh, "a_xywh")
    b = as_boxes(b_xywh, "b_xywh")
    if a.shape != b.shape:
        raise ValueError(f"box arrays differ in shape: {a.shape} vs {b.shape}")
    iw = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = np.maximum(a[:, 2], 0.0) * np.maximum(a[:, 3], 0.0)
    area_b = np.maximum(b[:, 2], 0.0) * np.maximum(b[:, 3], 0.0)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    iou = np.nan_to_num(iou, nan=0.0)
    return np.clip(iou, 0.0, 1.0)


def _centers(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, :2] + boxes[:, 2:] / 2.0


def center_error(pred_xywh, gt_xywh) -> np.ndarray:
    """Euclidean distance between box centres in pixels; inf where the prediction is NaN."""
    pred = as_boxes(pred_xywh, "pred_xywh")
    gt = as_boxes(gt_xywh, "gt_xywh")
    err = np.linalg.norm(_centers(pred) - _centers(gt), axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def normalized_center_error(pred_xywh, gt_xywh) -> np.ndarray:
    """Centre error with x divided by the ground-truth width and y by its height."""
    pred = as_boxes(pred_xywh, "pred_xywh")
    gt = as_boxes(gt_xywh, "gt_xywh")
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.linalg.norm((_centers(pred) - _centers(gt)) / gt[:, 2:], axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def success_curve(ious) -> np.ndarray:
    """(21,) fraction of frames with IoU strictly above each threshold of IOU_THRESHOLDS."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1, 1)
    if ious.shape[0] == 0:
        return np.full(IOU_THRESHOLDS.shape, np.nan)
    return np.mean(ious > IOU_THRESHOLDS[None, :], axis=0)


def precision_curve(errors, thresholds=CENTER_ERROR_THRESHOLDS_PX) -> np.ndarray:
    """Fraction of frames whose (possibly normalised) centre error is at most each threshold."""
    errors = np.asarray(errors, dtype=np.float64).reshape(-1, 1)
    if errors.shape[0] == 0:
        return np.full(np.shape(thresholds), np.nan)
    return np.mean(errors <= np.asarray(thresholds)[None, :], axis=0)


def _frame_errors(pred, gt, valid, invalid):
    """IoU, centre error and normalised centre error on the frames the invalid rule keeps."""
    if invalid not in INVALID_RULES:
        raise ValueError(f"invalid must be one of {INVALID_RULES}, got {invalid!r}")
    ious = box_iou(pred, gt)
    ce = center_error(pred, gt)
    nce = normalized_center_error(pred, gt)
    if invalid == "exclude":
        return ious[valid], ce[valid], nce[valid]
    ious[~valid] = -1.0  # below every threshold, so a failure everywhere
    ce[~valid] = np.inf
    nce[~valid] = np.inf
    return ious, ce, nce


def ope_metrics(pred_xywh, gt_xywh, absent=None, invalid: str = "exclude") -> dict:
    """OPE metrics of one sequence.

    ``pred_xywh`` and ``gt_xywh`` are ``(N, 4)`` pixel boxes, frame 0 included (by convention
    the prediction there is the initial box). ``absent`` optionally flags frames whose target is
    not visible. Returns scalars ``success_auc, precision, norm_precision, op50, op75`` and the
    curves ``success_curve (21,), precision_curve (51,), norm_precision_curve (51,)``, plus
    ``num_frames`` (frames counted) and ``num_invalid``.
    """
    pred = as_boxes(pred_xywh, "pred_xywh")
    gt = as_boxes(gt_xywh, "gt_xywh")
    if pred.shape != gt.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {gt.shape[0]} ground-truth frames")
    valid = valid_gt_mask(gt, absent)
    ious, ce, nce = _frame_errors(pred, gt, valid, invalid)
    succ = success_curve(ious)
    prec = precision_curve(ce)
    norm_prec = precision_curve(nce, NORM_CENTER_ERROR_THRESHOLDS)
    return {
        "success_auc": float(np.mean(succ)),
        "precision": float(prec[PRECISION_AT_PX]),
        "norm_precision": float(norm_prec[_NORM_PRECISION_INDEX]),
        "op50": float(np.mean(ious > 0.5)) if ious.size else float("nan"),
        "op75": float(np.mean(ious > 0.75)) if ious.size else float("nan"),
        "success_curve": succ,
        "precision_curve": prec,
        "norm_precision_curve": norm_prec,
        "num_frames": int(ious.size),
        "num_invalid": int(np.count_nonzero(~valid)),
    }


def got10k_ao_sr(pred_xywh, gt_xywh, absent=None) -> dict:
    """GOT-10k per-frame IoUs and AO / SR50 / SR75 of one sequence.

    As in the GOT-10k protocol, frame 0 (the initialisation) is left out and only frames with a
    visible, valid target count. ``ious`` is returned so a dataset AO can pool the frames of all
    sequences (see :func:`aggregate_got10k`).
    """
    pred = as_boxes(pred_xywh, "pred_xywh")
    gt = as_boxes(gt_xywh, "gt_xywh")
    if pred.shape != gt.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {gt.shape[0]} ground-truth frames")
    keep = valid_gt_mask(gt, absent)[1:]
    ious = box_iou(pred[1:], gt[1:])[keep]
    return _ao_sr(ious)


def _ao_sr(ious: np.ndarray) -> dict:
    if ious.size == 0:
        nan = float("nan")
        return {"ao": nan, "sr50": nan, "sr75": nan, "ious": ious}
    return {
        "ao": float(np.mean(ious)),
        "sr50": float(np.mean(ious > 0.5)),
        "sr75": float(np.mean(ious > 0.75)),
        "ious": ious,
    }


def aggregate_ope(per_sequence: Iterable[Mapping]) -> dict:
    """Dataset-level OPE numbers: curves averaged over sequences (got10k / pysot style).

    Every sequence weighs the same regardless of its length, which is how OTB, UAV123 and LaSOT
    results are reported. Sequences with no valid frame are skipped.
    """
    seqs = [m for m in per_sequence if m["num_frames"] > 0]
    if not seqs:
        raise ValueError("no sequence with a valid frame to aggregate")
    succ = np.mean([m["success_curve"] for m in seqs], axis=0)
    prec = np.mean([m["precision_curve"] for m in seqs], axis=0)
    norm_prec = np.mean([m["norm_precision_curve"] for m in seqs], axis=0)
    return {
        "success_auc": float(np.mean(succ)),
        "precision": float(prec[PRECISION_AT_PX]),
        "norm_precision": float(norm_prec[_NORM_PRECISION_INDEX]),
        "op50": float(np.mean([m["op50"] for m in seqs])),
        "op75": float(np.mean([m["op75"] for m in seqs])),
        "success_curve": succ,
        "precision_curve": prec,
        "norm_precision_curve": norm_prec,
        "num_sequences": len(seqs),
        "num_frames": int(sum(m["num_frames"] for m in seqs)),
    }


def aggregate_got10k(per_sequence: Iterable[Mapping]) -> dict:
    """Dataset AO / SR with the frames of all sequences pooled, as the GOT-10k server does."""
    ious = [np.asarray(m["ious"], dtype=np.float64) for m in per_sequence]
    out = _ao_sr(np.concatenate(ious) if ious else np.zeros(0))
    out.pop("ious")
    return out
