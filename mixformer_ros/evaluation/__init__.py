"""Tracking evaluation: OPE metrics, dataset readers, result files, runners, bags and plots.

Typical use::

    from mixformer_ros.evaluation import load_dataset, make_tracker, run_dataset, evaluate_tracker_dir
    seqs = load_dataset("data/sot")
    run_dataset(make_tracker("csrt"), seqs, "results/csrt")
    ev = evaluate_tracker_dir("results/csrt", seqs)
    ev.overall["success_auc"], ev.overall["precision"]

The command line (``python -m mixformer_ros.evaluation --help``) wraps the same functions.
This package never imports rclpy; live replay against the node is in ``mixformer_ros.ros.replay``.
"""

from .bags import BagConfig, read_bag_info, sequence_to_bag, video_to_bag
from .datasets import Sequence, load_dataset, load_sequence
from .metrics import (
    aggregate_got10k,
    aggregate_ope,
    box_iou,
    center_error,
    got10k_ao_sr,
    normalized_center_error,
    ope_metrics,
)
from .report import Evaluation, evaluate_results, evaluate_tracker_dir, score_result
from .results import SequenceResult, read_result, write_result
from .runners import make_tracker, run_bag, run_dataset, run_sequence, track_frames

__all__ = [
    "BagConfig",
    "Evaluation",
    "Sequence",
    "SequenceResult",
    "aggregate_got10k",
    "aggregate_ope",
    "box_iou",
    "center_error",
    "evaluate_results",
    "evaluate_tracker_dir",
    "got10k_ao_sr",
    "load_dataset",
    "load_sequence",
    "make_tracker",
    "normalized_center_error",
    "ope_metrics",
    "read_bag_info",
    "read_result",
    "run_bag",
    "run_dataset",
    "run_sequence",
    "score_result",
    "sequence_to_bag",
    "track_frames",
    "video_to_bag",
    "write_result",
]
