"""Command line of the evaluation toolkit: ``mixformer-eval <command> --help``
(or ``python -m mixformer_ros.evaluation <command> --help``).

Commands:
  run       run a tracker over sequence folders, writing got10k-format results
  metrics   score result folders against the ground truth (table, CSV or JSON)
  compare   several result folders side by side: Markdown + CSV tables, success/precision PNGs
  to-bag    convert a sequence folder or a video into a rosbag2 (mcap or sqlite3)
  eval-bag  run a tracker over a bag offline and score it
  replay    play a bag into the running tracker node and score what it publishes (needs ROS)

Exit codes: 0 success, 1 a run-time failure (message on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..cli_types import fraction, positive
from .bags import IMAGE_FORMATS, MAX_STAMP_NS, STORAGES, BagConfig, read_bag_info, sequence_to_bag, video_fps, video_to_bag
from .datasets import FORMATS, load_dataset, load_sequence
from .metrics import INVALID_RULES
from .plots import plot_curves
from .report import (
    evaluate_results,
    evaluate_tracker_dir,
    is_scorable,
    per_sequence_rows,
    plain_json,
    summary_rows,
    to_csv,
    to_markdown,
)
from .results import write_result
from .runners import TRACKER_NAMES, make_tracker, run_bag, run_dataset

log = logging.getLogger("mixformer_ros.evaluation")
DEFAULT_FPS = 30.0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="dataset folder holding sequence folders (or one sequence folder)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="sequence layout (default: detect)")
    p.add_argument("--sequences", nargs="+", metavar="NAME", help="only these sequences")


def _add_invalid_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--invalid", default="exclude", choices=INVALID_RULES, help="rule for frames without ground truth")


def _add_tracker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracker")
    g.add_argument("--tracker", required=True, choices=TRACKER_NAMES, help="which tracker to run")
    g.add_argument("--name", help="name of the result set (default: the tracker name)")
    g.add_argument("--nano-backbone", type=Path, help="NanoTrack backbone ONNX file")
    g.add_argument("--nano-head", type=Path, help="NanoTrack neck/head ONNX file")
    g.add_argument("--variant", choices=("S", "B"), help="MixFormerV2 variant")
    g.add_argument("--checkpoint", type=Path, help="MixFormerV2 checkpoint (.pth.tar) file")
    g.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"), help="MixFormerV2 backend")
    g.add_argument("--device", default="cpu", help="MixFormerV2 device, e.g. cpu or cuda:0")
    g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="MixFormerV2 precision (fp16: CUDA, int8: onnxruntime on CPU)")
    g.add_argument("--onnx-model", type=Path, help="exported ONNX model for --backend onnxruntime")
    g.add_argument("--preset", default="lasot", help="MixFormerV2 tracker preset")
    g.add_argument("--size-update-rate", type=fraction(), default=1.0,
                   help="fraction of the network's size change a box takes each frame, in (0, 1]; "
                        "1 = the official tracker (README, 'Size damping')")
    g.add_argument("--threads", type=positive(int), help="CPU threads for MixFormerV2")


def _make_tracker(args):
    if args.tracker == "mixformer":
        if args.checkpoint is None and args.variant is None:
            raise ValueError("mixformer needs --checkpoint (and/or --variant)")
        backend_options = {"onnx_model": args.onnx_model} if args.onnx_model else None
        return make_tracker(
            "mixformer", name=args.name or "mixformer", variant=args.variant, checkpoint=args.checkpoint,
            backend=args.backend, device=args.device, preset=args.preset, num_threads=args.threads,
            precision=args.precision, backend_options=backend_options, size_update_rate=args.size_update_rate,
        )
    if args.tracker == "nanotrack":
        return make_tracker("nanotrack", nano_backbone=args.nano_backbone, nano_head=args.nano_head)
    return make_tracker(args.tracker)


def _sequences(args):
    return load_dataset(args.data, args.format, args.sequences)


def _result_name(args) -> str:
    """The result set's name (``--name``, default: the tracker's); it becomes the folder RESULTS/NAME."""
    name = args.name or args.tracker
    if "/" in name or name in (".", ".."):
        raise ValueError(f"--name {name!r} must be a plain folder name (it becomes RESULTS/NAME)")
    return name


def _without_ious(metrics: dict) -> dict:
    """The metrics less the per-frame IoUs kept for pooling GOT-10k AO."""
    return {key: value for key, value in metrics.items() if key != "ious"}


def _print_tables(evaluations, out_dir: Path | None, fmt: str) -> None:
    summary, per_seq = summary_rows(evaluations), per_sequence_rows(evaluations)
    if fmt == "json":
        payload = {
            ev.tracker: {
                "overall": plain_json(_without_ious(ev.overall)),
                "per_sequence": {k: plain_json(_without_ious(v)) for k, v in ev.per_sequence.items()},
            }
            for ev in evaluations
        }
        text = json.dumps(payload, indent=1, allow_nan=False)
    elif fmt == "csv":
        text = to_csv(per_seq) + "\n" + to_csv(summary)
    else:
        text = to_markdown(per_seq) + "\n" + to_markdown(summary)
    sys.stdout.write(text)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "per_sequence.md").write_text(to_markdown(per_seq))
        (out_dir / "per_sequence.csv").write_text(to_csv(per_seq))
        (out_dir / "summary.md").write_text(to_markdown(summary))
        (out_dir / "summary.csv").write_text(to_csv(summary))


def cmd_run(args) -> int:
    name = _result_name(args)
    sequences = _sequences(args)
    tracker = _make_tracker(args)
    run_dataset(tracker, sequences, args.results / name, overwrite=args.overwrite, frame_step=args.frame_step)
    scorable = [seq for seq in sequences if is_scorable(seq)]
    if len(scorable) < len(sequences):
        log.info("results of %d sequence(s) without ground truth after the first frame are written but not "
                 "scored (the GOT-10k test split is scored by its evaluation server)", len(sequences) - len(scorable))
    if scorable:
        _print_tables([evaluate_tracker_dir(args.results / name, scorable, args.invalid)], None, "md")
    return 0


def _evaluate_dirs(args, sequences) -> list:
    """One evaluation per results folder, each under a name of its own (the folder's, with its
    parent's when two folders share a name: results/csrt and old/csrt)."""
    dirs = [Path(d).resolve() for d in args.result_dirs]
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):
        names = [f"{d.parent.name}/{d.name}" for d in dirs]
    if len(set(names)) < len(names):
        raise ValueError(f"results folders {[str(d) for d in args.result_dirs]} cannot be told apart by name")
    return [evaluate_tracker_dir(d, sequences, args.invalid, name=n) for d, n in zip(dirs, names)]


def cmd_metrics(args) -> int:
    sequences = _sequences(args)
    evaluations = _evaluate_dirs(args, sequences)
    _print_tables(evaluations, args.out, args.output_format)
    return 0


def cmd_compare(args) -> int:
    sequences = _sequences(args)
    evaluations = _evaluate_dirs(args, sequences)
    _print_tables(evaluations, args.out, "md")
    written = plot_curves(evaluations, args.out, title=args.title)
    for path in written.values():
        log.info("wrote %s", path)
    return 0


def _stamp_seconds(text: str) -> float:
    """An argparse type: seconds since the epoch that a ROS stamp can hold (0 < t < 2^31)."""
    value = float(text)
    if not 0 < value < MAX_STAMP_NS / 1e9:
        raise argparse.ArgumentTypeError(f"must be in (0, 2^31) seconds (builtin_interfaces/Time), got {text}")
    return value


def _bag_config(args, fps: float) -> BagConfig:
    return BagConfig(
        storage=args.storage, image_format=args.image_format, fps=fps, image_topic=args.image_topic,
        info_topic=args.info_topic, gt_topic=args.gt_topic, frame_id=args.frame_id,
        start_time_ns=int(round(args.start_time * 1e9)), version=args.bag_version,
    )


def cmd_to_bag(args) -> int:
    source: Path = args.source
    if source.is_dir():
        if args.gt is not None:
            raise ValueError("--gt is for a video; a sequence folder brings its own ground truth")
        seq = load_sequence(source, args.format)
        sequence_to_bag(seq, args.out, _bag_config(args, args.fps or DEFAULT_FPS))
    elif source.is_file():
        fps = args.fps or video_fps(source) or DEFAULT_FPS
        video_to_bag(source, args.out, _bag_config(args, fps), gt_file=args.gt)
    else:
        raise FileNotFoundError(f"{source} is neither a sequence folder nor a video file")
    info = read_bag_info(args.out)
    log.info("wrote %s: %d frames on %s at %.3f fps, ground truth on %s", args.out, len(info),
             info.image_topic, info.fps, info.gt_topic)
    return 0


def cmd_eval_bag(args) -> int:
    name = _result_name(args)
    info = read_bag_info(args.bag, args.image_topic, args.gt_topic)
    tracker = _make_tracker(args)
    result = run_bag(tracker, info, progress=True)
    if args.results is not None:
        write_result(args.results / name, result)
    ev = evaluate_results(name, [result], [info], args.invalid)
    _print_tables([ev], None, "md")
    return 0


def cmd_replay(args) -> int:
    from mixformer_ros.ros.replay import replay_main  # needs rclpy; imported only here

    return replay_main(args)


def _add_bag_layout_args(p: argparse.ArgumentParser) -> None:
    d = BagConfig()
    p.add_argument("--storage", default=d.storage, choices=STORAGES, help="rosbag2 storage plugin")
    p.add_argument("--image-format", default=d.image_format, choices=IMAGE_FORMATS,
                   help="raw: sensor_msgs/Image bgr8; jpeg: CompressedImage on <topic>/compressed")
    p.add_argument("--image-topic", default=d.image_topic, help="camera topic")
    p.add_argument("--info-topic", default=d.info_topic, help="camera_info topic")
    p.add_argument("--gt-topic", default=d.gt_topic, help="ground-truth Detection2D topic")
    p.add_argument("--frame-id", default=d.frame_id, help="header frame_id")
    p.add_argument("--start-time", type=_stamp_seconds, default=d.start_time_ns / 1e9,
                   help="stamp of the first frame, seconds since the epoch")
    p.add_argument("--bag-version", type=int, default=d.version, choices=(8, 9),
                   help="rosbag2 metadata version")


def _add_replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="bag folder made by to-bag (frames + ground truth)")
    p.add_argument("--mode", default="realtime", choices=("realtime", "lockstep"),
                   help="realtime: publish at the recorded rate; lockstep: wait for each result first")
    p.add_argument("--node", default="/mixformer_tracker",
                   help="fully qualified name of the running tracker node (its ~/init, ~/detection, ~/status)")
    p.add_argument("--camera-topic",
                   help="topic to publish frames on (default: <node namespace>/image, or "
                        "<node namespace>/image/compressed for a JPEG bag)")
    p.add_argument("--rate", type=positive(float), default=1.0, help="playback speed factor in realtime mode")
    p.add_argument("--clock", action="store_true", help="publish /clock from the bag (for use_sim_time)")
    p.add_argument("--timeout", type=positive(float), default=10.0,
                   help="seconds to wait for the node, the init service and (lockstep) each result")
    p.add_argument("--image-topic", help="camera topic in the bag (default: the only one)")
    p.add_argument("--gt-topic", help="ground-truth topic in the bag (default: the only one)")
    p.add_argument("--name", default="mixformer_live", help="name of the result set")
    p.add_argument("--results", type=Path, help="also write the result files under this root")
    p.add_argument("--json", type=Path, help="write the report (accuracy, latency, drops) as JSON here")
    _add_invalid_arg(p)


def build_parser() -> argparse.ArgumentParser:
    run_as_module = Path(sys.argv[0]).name == "__main__.py"
    parser = argparse.ArgumentParser(
        prog="python -m mixformer_ros.evaluation" if run_as_module else None,
        description="Evaluate single-object trackers (MixFormerV2, OpenCV CSRT/KCF/NanoTrack) "
                    "on sequence folders and rosbag2 files.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a tracker over sequences and write results",
                       description="Run a tracker over sequence folders; results go to RESULTS/NAME/ "
                                   "in the got10k text format. Existing results are reused unless --overwrite.")
    _add_data_args(p)
    _add_tracker_args(p)
    p.add_argument("--results", type=Path, required=True, help="results root folder")
    p.add_argument("--overwrite", action="store_true", help="rerun sequences that already have results")
    p.add_argument("--frame-step", type=positive(int), default=1, metavar="K",
                   help="show the tracker only every K-th frame, as a node that falls behind its camera sees them; "
                        "the frames between keep the last box (default 1: every frame)")
    _add_invalid_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("metrics", help="score result folders",
                       description="Score one or more result folders (one per tracker) against the ground truth.")
    p.add_argument("result_dirs", nargs="+", type=Path, metavar="RESULT_DIR", help="results/<tracker> folders")
    _add_data_args(p)
    _add_invalid_arg(p)
    p.add_argument("--output-format", default="md", choices=("md", "csv", "json"), help="what to print")
    p.add_argument("--out", type=Path, help="also write tables (Markdown and CSV) into this folder")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("compare", help="tables and success/precision plots for several trackers",
                       description="Compare result folders: per-sequence and summary tables (Markdown, CSV) "
                                   "and success_plot.png / precision_plot.png in --out.")
    p.add_argument("result_dirs", nargs="+", type=Path, metavar="RESULT_DIR", help="results/<tracker> folders")
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="folder for tables and plots")
    p.add_argument("--title", default="", help="text appended to the plot titles")
    _add_invalid_arg(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("to-bag", help="convert a sequence folder or a video into a rosbag2",
                       description="Write frames, camera_info and ground-truth Detection2D into a new bag folder.")
    p.add_argument("source", type=Path, help="sequence folder or video file")
    p.add_argument("out", type=Path, help="bag folder to create (must not exist)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="sequence layout (default: detect)")
    p.add_argument("--fps", type=positive(float), default=None,
                   help="frame rate of the header stamps (default: the video's own, or 30)")
    p.add_argument("--gt", type=Path,
                   help="video only: ground-truth file, one x,y,w,h (or 8-value polygon) line per frame")
    _add_bag_layout_args(p)
    p.set_defaults(func=cmd_to_bag)

    p = sub.add_parser("eval-bag", help="run a tracker offline over a bag and score it",
                       description="Decode every frame of a bag, initialise from the first ground truth "
                                   "and score the boxes (same boxes as evaluating the source folder).")
    p.add_argument("bag", type=Path, help="bag folder")
    _add_tracker_args(p)
    p.add_argument("--image-topic", help="camera topic (default: the only Image/CompressedImage topic)")
    p.add_argument("--gt-topic", help="ground-truth topic (default: the only Detection2D topic)")
    p.add_argument("--results", type=Path, help="also write the result files under this root")
    _add_invalid_arg(p)
    p.set_defaults(func=cmd_eval_bag)

    p = sub.add_parser("replay", help="play a bag into the running tracker node and score it (ROS)",
                       description="Play a bag into a running mixformer_tracker node, initialise it through "
                                   "~/init, record ~/detection and ~/status and report accuracy, latency, "
                                   "throughput and drops.")
    _add_replay_args(p)
    p.set_defaults(func=cmd_replay)
    return parser


def _is_bad_input(exc: Exception) -> bool:
    """A wrong argument, file or checkpoint: reported in one line, without a traceback."""
    if isinstance(exc, (ValueError, KeyError, OSError)):
        return True
    checkpoint = sys.modules.get("mixformer_ros.model.checkpoint")  # imported only once a model was built
    return checkpoint is not None and isinstance(exc, checkpoint.CheckpointError)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as exc:
        if not _is_bad_input(exc):
            raise
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
