"""What dynamic int8 quantisation (and fp16 on a GPU) does to tracking, measured against fp32.

Runs the fp32 and the reduced-precision ONNX Runtime trackers side by side over the shared real
sequences (../shared/data/sot) and reports, per sequence and overall: the mean IoU between the
fp32 and the reduced-precision boxes (agreement; 1.0 = identical tracks) and each one's success
AUC against the ground truth. With fixture (random) weights the tracks are meaningless as
tracking but the agreement still shows how far quantisation moves the network's output; the
meaningful figure needs a trained model (models/demo_tracker.pth.tar, or --checkpoint).

Usage: .venv/bin/python bench/int8_agreement.py [--checkpoint FILE] [--variant S] [--trained-only] [--max-frames N]
Writes bench/results/int8_agreement.json and its section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))
from paths import SOT_DIR  # noqa: E402
from speed import update_benchmarks_md  # noqa: E402
from mixformer_ros.backends import export  # noqa: E402
from mixformer_ros.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from mixformer_ros.evaluation.datasets import load_dataset  # noqa: E402
from mixformer_ros.evaluation.metrics import box_iou, ope_metrics  # noqa: E402
from mixformer_ros.model import MixFormerV2, load_model  # noqa: E402
from mixformer_ros.tracking import MixFormerTracker, preset_settings  # noqa: E402

RESULTS = REPO / "bench" / "results" / "int8_agreement.json"
DEMO_MODEL = REPO / "models" / "demo_tracker.pth.tar"
MD_BEGIN, MD_END = "<!-- bench/int8_agreement.py: begin -->", "<!-- bench/int8_agreement.py: end -->"


def networks(args) -> list[tuple[MixFormerV2, str]]:
    """The fixture's released S shape (how far quantisation moves the real-size network) and, when
    present, a trained model (whether that movement matters for tracking)."""
    from parity import fixture_state_dict

    out = []
    if not args.trained_only:
        out.append((load_model(state_dict=fixture_state_dict(args.variant)),
                    f"MixFormerV2-{args.variant} shape, fixture (random) weights: tracks are not meaningful"))
    path = Path(args.checkpoint) if args.checkpoint else DEMO_MODEL
    if path.is_file():
        model = load_model(checkpoint=path)
        c = model.config
        out.append((model, f"trained {path.name} (depth {c.depth}, width {c.embed_dim}, search {c.search_size})"))
    elif args.checkpoint:
        raise SystemExit(f"checkpoint not found: {path}")
    else:
        logging.warning("no trained model at %s: the trained-model agreement is missing from this run", path)
    return out


def run(args, model: MixFormerV2, weights: str) -> dict:
    settings = preset_settings(args.preset, model.config)
    cfg = model.config
    reduced = "fp16" if args.device.startswith("cuda") else "int8"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        backends = {p: OnnxRuntimeBackend(export.cached_export(model, p, cache), device=args.device,
                                          num_threads=args.threads) for p in ("fp32", reduced)}
        per_seq = {}
        for seq in load_dataset(SOT_DIR):
            n = min(len(seq), args.max_frames) if args.max_frames else len(seq)
            trackers = {p: MixFormerTracker(b, cfg.template_size, cfg.search_size, settings) for p, b in backends.items()}
            boxes = {p: [seq.init_box.tolist()] for p in backends}
            first = np.ascontiguousarray(seq.read_frame(0)[..., ::-1])
            for trk in trackers.values():
                trk.initialize(first, seq.init_box)
            for i in tqdm(range(1, n), desc=seq.name, unit="frame", leave=False):
                frame = np.ascontiguousarray(seq.read_frame(i)[..., ::-1])
                for p, trk in trackers.items():
                    boxes[p].append(trk.track(frame).box)
            arr = {p: np.asarray(b) for p, b in boxes.items()}
            gt, absent = seq.gt[:n], seq.absent[:n]
            per_seq[seq.name] = {
                "frames": n,
                "mean_iou_to_fp32": float(np.mean(box_iou(arr["fp32"][1:], arr[reduced][1:]))),
                "success_auc": {p: ope_metrics(a, gt, absent)["success_auc"] for p, a in arr.items()},
            }
    frames = sum(s["frames"] - 1 for s in per_seq.values())
    overall = {
        "mean_iou_to_fp32_frame_weighted": sum(s["mean_iou_to_fp32"] * (s["frames"] - 1) for s in per_seq.values()) / frames,
        "mean_iou_to_fp32_sequence_mean": float(np.mean([s["mean_iou_to_fp32"] for s in per_seq.values()])),
        "success_auc": {p: float(np.mean([s["success_auc"][p] for s in per_seq.values()])) for p in backends},
    }
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "weights": weights, "variant_config": cfg.to_dict(),
            "precision": reduced, "device": args.device, "preset": args.preset, "frames": frames,
            "overall": overall, "sequences": per_seq}


def markdown(res: dict) -> str:
    o, p = res["overall"], res["precision"]
    rows = "\n".join(f"| {name} | {s['frames']} | {s['mean_iou_to_fp32']:.3f} | {s['success_auc']['fp32']:.3f} "
                     f"| {s['success_auc'][p]:.3f} |" for name, s in res["sequences"].items())
    return "\n".join([
        f"## {p} vs fp32 tracking agreement: {res['weights']} (bench/int8_agreement.py)",
        "",
        f"Run {res['when']}, {res['device']}, weights: **{res['weights']}**, preset `{res['preset']}`, "
        f"{res['frames']} tracked frames of ../shared/data/sot.",
        "",
        f"| sequence | frames | mean IoU {p} vs fp32 | success AUC fp32 | success AUC {p} |",
        "|---|---|---|---|---|",
        rows,
        f"| **all** | {res['frames']} | {o['mean_iou_to_fp32_frame_weighted']:.3f} (per-sequence mean "
        f"{o['mean_iou_to_fp32_sequence_mean']:.3f}) | {o['success_auc']['fp32']:.3f} | {o['success_auc'][p]:.3f} |",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="trained checkpoint (default: models/demo_tracker.pth.tar when present)")
    p.add_argument("--variant", choices=["S", "B"], default="S", help="shape of the fixture-weight network")
    p.add_argument("--trained-only", action="store_true", help="skip the fixture-weight network")
    p.add_argument("--device", default="cpu", help="cpu (int8 vs fp32) or cuda (fp16 vs fp32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="lasot")
    p.add_argument("--max-frames", type=int, default=0, help="frames per sequence (0 = all)")
    p.add_argument("--cache-dir", help="ONNX export cache (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # torch only exports here; keep its pool from competing with ORT's
    runs = [run(args, model, weights) for model, weights in networks(args)]
    trained = any(r["weights"].startswith("trained") for r in runs)
    section = "\n\n".join([MD_BEGIN] + [markdown(r) for r in runs] + (
        [] if trained else ["**Missing:** no trained model was available for this run "
                            "(models/demo_tracker.pth.tar), so only the fixture-weight agreement is reported."]) + [MD_END])
    print(section)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(runs, indent=2))
        update_benchmarks_md(section, MD_BEGIN, MD_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
