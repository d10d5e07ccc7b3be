"""Accuracy of the trackers users know, measured through our evaluation harness.

Runs OpenCV's CSRT, KCF and NanoTrack v2 (and MixFormerV2 when given ``--checkpoint``) over the
eight public sequences in ../shared/data/sot with ``mixformer_ros.evaluation`` (the same code as
``python -m mixformer_ros.evaluation run``), then scores them with the OPE metrics. The data
README gives reference numbers measured independently (AUC / precision@20px: NanoTrack v2
0.711 / 0.916, CSRT 0.516 / 0.660, KCF 0.190 / 0.237); this script prints ours next to them.
Accuracy does not depend on the machine; the FPS column does (2 shared cores here).

Usage: .venv/bin/python bench/eval_baselines.py [--checkpoint FILE --variant S] [--plots DIR]
Prints the tables, writes bench/results/eval_baselines.json and its section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))
from paths import OPENCV_MODELS_DIR, SOT_DIR  # noqa: E402
from speed import update_benchmarks_md  # noqa: E402
from mixformer_ros.evaluation import evaluate_tracker_dir, load_dataset, make_tracker, run_dataset  # noqa: E402
from mixformer_ros.evaluation.plots import plot_curves  # noqa: E402
from mixformer_ros.evaluation.report import per_sequence_rows, summary_rows, to_markdown  # noqa: E402

RESULTS = REPO / "bench" / "results" / "eval_baselines.json"
MD_BEGIN, MD_END = "<!-- bench/eval_baselines.py: begin -->", "<!-- bench/eval_baselines.py: end -->"
REFERENCE = {"nanotrack": (0.711, 0.916), "csrt": (0.516, 0.660), "kcf": (0.190, 0.237)}


def trackers(args) -> dict:
    nano = {"nano_backbone": OPENCV_MODELS_DIR / "nanotrack_backbone_sim.onnx",
            "nano_head": OPENCV_MODELS_DIR / "nanotrack_head_sim.onnx"}
    out = {
        "csrt": lambda: make_tracker("csrt"),
        "kcf": lambda: make_tracker("kcf"),
        "nanotrack": lambda: make_tracker("nanotrack", **nano),
    }
    if args.checkpoint:
        name = f"mixformerv2_{args.variant or 'ckpt'}"
        out[name] = lambda: make_tracker("mixformer", name=name, variant=args.variant, checkpoint=args.checkpoint,
                                         device=args.device)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="also evaluate MixFormerV2 from this checkpoint")
    p.add_argument("--variant", choices=("S", "B"), help="MixFormerV2 variant of the checkpoint")
    p.add_argument("--device", default="cpu", help="MixFormerV2 device")
    p.add_argument("--plots", type=Path, help="write success/precision plots (PNG) into this folder")
    p.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    sequences = load_dataset(SOT_DIR)
    evaluations = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in trackers(args).items():
            run_dataset(factory(), sequences, Path(tmp) / name)
            evaluations.append(evaluate_tracker_dir(Path(tmp) / name, sequences))
    per_seq, summary = to_markdown(per_sequence_rows(evaluations)), to_markdown(summary_rows(evaluations))
    reference = ["| tracker | ours AUC / Prec@20 | data README AUC / Prec@20 |", "|---|---|---|"]
    for ev in evaluations:
        ref = REFERENCE.get(ev.tracker)
        ref_text = f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "-"
        ours = f"{ev.overall['success_auc']:.3f} / {ev.overall['precision']:.3f}"
        reference.append(f"| {ev.tracker} | {ours} | {ref_text} |")
    reference = "\n".join(reference) + "\n"
    print(per_seq + "\n" + summary + "\n" + reference)

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {
        "run": stamp, "opencv": cv2.__version__, "cpu": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "sequences": [s.name for s in sequences],
        "trackers": {
            ev.tracker: {
                "overall": {k: v for k, v in ev.overall.items() if not isinstance(v, np.ndarray)},
                "success_curve": ev.overall["success_curve"].tolist(),
                "precision_curve": ev.overall["precision_curve"].tolist(),
                "per_sequence": {n: {k: m[k] for k in ("success_auc", "precision", "norm_precision", "op50", "fps")}
                                 for n, m in ev.per_sequence.items()},
            }
            for ev in evaluations
        },
        "reference": {k: {"success_auc": v[0], "precision": v[1]} for k, v in REFERENCE.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    if args.plots:
        plot_curves(evaluations, args.plots, title="(8 sequences)")
    if not args.no_markdown:
        section = "\n".join([
            MD_BEGIN,
            "## Baseline trackers through the evaluation harness (bench/eval_baselines.py)",
            "",
            f"Run {stamp}, OpenCV {cv2.__version__}, {len(sequences)} sequences of ../shared/data/sot "
            f"({sum(len(s) for s in sequences)} frames), load average {results['load_average']}. "
            "FPS is tracker time only (decoding excluded) on a shared 2-core machine.",
            "",
            summary,
            reference,
            MD_END,
        ])
        update_benchmarks_md(section, MD_BEGIN, MD_END)
    print(f"wrote {RESULTS.relative_to(REPO)}" + ("" if args.no_markdown else " and BENCHMARKS.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
