"""What dynamic int8 quantisation (fp16 on a GPU; optionally torch bf16) does to tracking, measured against fp32.

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
import copy
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
from mixformer_ros.backends.torch_backend import TorchBackend  # noqa: E402
from mixformer_ros.evaluation.datasets import load_dataset  # noqa: E402
from mixformer_ros.evaluation.metrics import box_iou, ope_metrics  # noqa: E402
from mixformer_ros.model import MixFormerV2, load_model, load_model_and_record, trained_crop_factors  # noqa: E402
from mixformer_ros.tracking import MixFormerTracker, preset_settings  # noqa: E402

RESULTS = REPO / "bench" / "results" / "int8_agreement.json"
DEMO_MODEL = REPO / "models" / "demo_tracker.pth.tar"
MD_BEGIN, MD_END = "<!-- bench/int8_agreement.py: begin -->", "<!-- bench/int8_agreement.py: end -->"


def networks(args) -> list[tuple[MixFormerV2, str, dict[str, float]]]:
    """The fixture's released S shape (how far quantisation moves the real-size network) and, when
    present, a trained model (whether that movement matters for tracking), each with the crop
    factors it records (as build_tracker applies them)."""
    from parity import fixture_state_dict

    out = []
    if not args.trained_only:
        out.append((load_model(state_dict=fixture_state_dict(args.variant)),
                    f"MixFormerV2-{args.variant} shape, fixture (random) weights: tracks are not meaningful", {}))
    path = Path(args.checkpoint) if args.checkpoint else DEMO_MODEL
    if path.is_file():
        model, record = load_model_and_record(checkpoint=path)
        c = model.config
        out.append((model, f"trained {path.name} (depth {c.depth}, width {c.embed_dim}, search {c.search_size})",
                    trained_crop_factors(record)))
    elif args.checkpoint:
        raise SystemExit(f"checkpoint not found: {path}")
    else:
        logging.warning("no trained model at %s: the trained-model agreement is missing from this run", path)
    return out


def run(args, model: MixFormerV2, weights: str, trained_crop: dict[str, float]) -> dict:
    """Every contestant tracks each sequence frame by frame beside the ORT fp32 reference."""
    settings = preset_settings(args.preset, model.config, trained_crop)
    cfg = model.config
    reduced = "fp16" if args.device.startswith("cuda") else "int8"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        backends = {name: OnnxRuntimeBackend(export.cached_export(model, p, cache), device=args.device,
                                             num_threads=args.threads)
                    for name, p in (("fp32", "fp32"), (f"onnxruntime {reduced}", reduced))}
        if args.torch_bf16:
            backends["torch bf16"] = TorchBackend(copy.deepcopy(model), device=args.device, precision="bf16")
        per_seq = {}
        for seq in load_dataset(SOT_DIR):
            n = min(len(seq), args.max_frames) if args.max_frames else len(seq)
            trackers = {k: MixFormerTracker(b, cfg.template_size, cfg.search_size, settings) for k, b in backends.items()}
            boxes = {k: [seq.init_box.tolist()] for k in backends}
            first = np.ascontiguousarray(seq.read_frame(0)[..., ::-1])
            for trk in trackers.values():
                trk.initialize(first, seq.init_box)
            for i in tqdm(range(1, n), desc=seq.name, unit="frame", leave=False):
                frame = np.ascontiguousarray(seq.read_frame(i)[..., ::-1])
                for k, trk in trackers.items():
                    boxes[k].append(trk.track(frame).box)
            arr = {k: np.asarray(b) for k, b in boxes.items()}
            gt, absent = seq.gt[:n], seq.absent[:n]
            per_seq[seq.name] = {
                "frames": n,
                "mean_iou_to_fp32": {k: float(np.mean(box_iou(arr["fp32"][1:], a[1:]))) for k, a in arr.items() if k != "fp32"},
                "success_auc": {k: ope_metrics(a, gt, absent)["success_auc"] for k, a in arr.items()},
            }
    frames = sum(s["frames"] - 1 for s in per_seq.values())
    others = [k for k in backends if k != "fp32"]
    overall = {
        "mean_iou_to_fp32_frame_weighted": {
            k: sum(s["mean_iou_to_fp32"][k] * (s["frames"] - 1) for s in per_seq.values()) / frames for k in others},
        "mean_iou_to_fp32_sequence_mean": {
            k: float(np.mean([s["mean_iou_to_fp32"][k] for s in per_seq.values()])) for k in others},
        "success_auc": {k: float(np.mean([s["success_auc"][k] for s in per_seq.values()])) for k in backends},
    }
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "weights": weights, "variant_config": cfg.to_dict(),
            "contestants": others, "device": args.device, "preset": args.preset,
            "search_factor": settings.search_factor, "frames": frames,
            "overall": overall, "sequences": per_seq}


def markdown(res: dict) -> str:
    o, others = res["overall"], res["contestants"]
    head = " | ".join(f"mean IoU {k} vs fp32" for k in others)
    aucs = " | ".join(f"success AUC {k}" for k in others)
    rows = "\n".join(
        f"| {name} | {s['frames']} | " + " | ".join(f"{s['mean_iou_to_fp32'][k]:.3f}" for k in others)
        + f" | {s['success_auc']['fp32']:.3f} | " + " | ".join(f"{s['success_auc'][k]:.3f}" for k in others) + " |"
        for name, s in res["sequences"].items())
    total = (f"| **all** | {res['frames']} | "
             + " | ".join(f"{o['mean_iou_to_fp32_frame_weighted'][k]:.3f} (per-sequence mean "
                          f"{o['mean_iou_to_fp32_sequence_mean'][k]:.3f})" for k in others)
             + f" | {o['success_auc']['fp32']:.3f} | " + " | ".join(f"{o['success_auc'][k]:.3f}" for k in others) + " |")
    return "\n".join([
        f"## Reduced precision vs ORT fp32 tracking agreement: {res['weights']} (bench/int8_agreement.py)",
        "",
        f"Run {res['when']}, {res['device']}, preset `{res['preset']}` (search factor {res['search_factor']:g}), {res['frames']} tracked frames of "
        "../shared/data/sot (frame-weighted mean IoU; per-sequence mean in brackets).",
        "",
        f"| sequence | frames | {head} | success AUC fp32 | {aucs} |",
        "|---|---|" + "---|" * (2 * len(others) + 1),
        rows,
        total,
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="trained checkpoint (default: models/demo_tracker.pth.tar when present)")
    p.add_argument("--variant", choices=["S", "B"], default="S", help="shape of the fixture-weight network")
    p.add_argument("--trained-only", action="store_true", help="skip the fixture-weight network")
    p.add_argument("--torch-bf16", action="store_true", help="also run the torch backend in bf16")
    p.add_argument("--device", default="cpu", help="cpu (int8 vs fp32) or cuda (fp16 vs fp32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="lasot")
    p.add_argument("--max-frames", type=int, default=0, help="frames per sequence (0 = all)")
    p.add_argument("--cache-dir", help="ONNX export cache (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # torch only exports here; keep its pool from competing with ORT's
    runs = [run(args, model, weights, trained_crop) for model, weights, trained_crop in networks(args)]
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
