"""Command line: ``python -m mixformer_ros.training.cli {train,distill,score} --config X.yaml``.

Multi-GPU: ``torchrun --nproc_per_node=N -m mixformer_ros.training.cli train --config X.yaml``.
Exit codes: 0 done (or stopped at --max-steps), 2 bad config or data path, 130 interrupted
(a resumable checkpoint was saved; run the same command again to continue).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..cli_types import positive
from .config import ConfigError, load_config, parse_override
from mixformer_ros.model import CheckpointError

from .data.readers import DataPathError

log = logging.getLogger("mixformer_ros.training")

_HELP = {
    "train": "train a MixFormerV2 (or, with model.kind=dense, the dense teacher) from box labels",
    "distill": "distil a teacher into a student (dense-to-sparse and/or deep-to-shallow)",
    "score": "train only the score head on positive/negative pairs, everything else frozen",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mixformer_ros.training.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, text in _HELP.items():
        p = sub.add_parser(stage, help=text, description=text)
        p.add_argument("--config", required=True, help="YAML file (see mixformer_ros/training/configs/)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.lr=3e-4 --set output_dir=runs/x (repeatable)")
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, or cuda")
        p.add_argument("--no-resume", action="store_true",
                       help="start from scratch even if output_dir holds a resumable checkpoint")
        p.add_argument("--max-steps", type=positive(int), default=None,
                       help="stop after this many optimisation steps in total (the run stays resumable)")
        p.add_argument("--threads", type=positive(int), default=None,
                       help="CPU threads for the training step (default: PyTorch's choice; 1 helps on a busy machine)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _stop_like_ctrl_c(signum, frame) -> None:
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):  # `train &` from a script ignores Ctrl-C
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        overrides["stage"] = args.stage
        cfg = load_config(args.config, overrides)
        from .trainer import Trainer, release_distributed  # imported late so --help and config errors are fast

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)

        # SIGTERM (a scheduler's time limit, docker stop) stops like Ctrl-C: at the end of the step,
        # with a resumable checkpoint.
        previous_sigterm = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
        try:
            trainer = Trainer(cfg, device=args.device, resume=not args.no_resume, max_steps=args.max_steps)
            path = trainer.run()
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            release_distributed()
    except (ConfigError, DataPathError, CheckpointError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    log.info("done: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
