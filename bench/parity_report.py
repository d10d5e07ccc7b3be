"""Print the largest deviation from the official MixFormerV2 outputs for every quantity of the
parity fixture (network S/B, full and cached paths; the tracker on the fixture video).

Usage: .venv/bin/python bench/parity_report.py [--json bench/results/parity.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this working tree, not the installed copy
from parity import FIXTURE_SEARCH_FACTOR, fixture_state_dict, load_npz, video_rgb  # noqa: E402
from mixformer_ros.model import build_mixformerv2  # noqa: E402
from mixformer_ros.tracking import build_tracker  # noqa: E402


def network_errors(variant: str) -> dict[str, float]:
    net = build_mixformerv2(variant)
    net.load_state_dict(fixture_state_dict(variant), strict=True)
    ref = load_npz(f"network_{variant}_seed0.npz")
    t, ot, s = (torch.from_numpy(ref[k]) for k in ("input_template", "input_online_template", "input_search"))
    errors = {}
    with torch.no_grad():
        for path, out in (("full", net(t, ot, s)), ("cached", net.forward_search(s, net.encode_templates(t, ot)))):
            errors[f"{path}.pred_boxes"] = np.abs(out["pred_boxes"].numpy() - ref["pred_boxes"]).max()
            errors[f"{path}.score_logit"] = np.abs(out["pred_scores"].numpy() - ref["pred_scores_logit"]).max()
            errors[f"{path}.probs"] = max(np.abs(out[k].numpy() - ref[k]).max() for k in ("prob_l", "prob_t", "prob_r", "prob_b"))
            errors[f"{path}.pred_tokens"] = np.abs(out["pred_tokens"].numpy() - ref["pred_tokens_final"]).max()
    return {k: float(v) for k, v in errors.items()}


def tracker_errors(variant: str) -> dict[str, float]:
    ref = load_npz(f"tracker_{variant}.npz")
    trk = build_tracker(variant=variant, state_dict=fixture_state_dict(variant), preset="lasot")
    assert trk.settings.search_factor == FIXTURE_SEARCH_FACTOR[variant]
    frames, box = video_rgb()
    trk.initialize(frames[0], box)
    results = [trk.track(f) for f in frames[1:]]
    boxes = np.array([box] + [r.box for r in results])
    scores = np.array([r.score for r in results])
    return {
        "real.boxes_px": float(np.abs(boxes - ref["real__out_boxes_xywh"]).max()),
        "real.scores": float(np.abs(scores - ref["real__out_scores"][1:]).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    report = {v: {**network_errors(v), **tracker_errors(v)} for v in ("S", "B")}
    print(f"{'quantity':28s} {'S max abs':>12s} {'B max abs':>12s}")
    for key in report["S"]:
        print(f"{key:28s} {report['S'][key]:12.3g} {report['B'][key]:12.3g}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
