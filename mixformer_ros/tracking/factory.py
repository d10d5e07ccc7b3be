"""One call from a checkpoint (or a variant) to a ready tracker."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..backends import create_backend
from ..model import MixFormerV2Config, build_mixformerv2, load_model_and_record, trained_crop_factors, variant_config
from .presets import preset_settings
from .tracker import MixFormerTracker

log = logging.getLogger(__name__)


def build_tracker(
    variant: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    state_dict: dict | None = None,
    backend: str = "torch",
    device: str = "cpu",
    preset: str = "lasot",
    precision: str = "fp32",
    num_threads: int | None = None,
    backend_options: dict | None = None,
    **settings_overrides,
) -> MixFormerTracker:
    """Build network, backend and tracker.

    ``variant`` ("S"/"B") fixes the network shape; with a checkpoint or an ONNX export it may be
    omitted (the shape comes from the file's config record or its tensor shapes, or from the
    export's manifest). Without weights the network is
    randomly initialised, which is only useful for plumbing tests, and a warning says so, unless
    ``backend_options["onnx_model"]`` brings the weights (an ONNX-only deployment).
    The preset gives the tracker settings, except the crop factors of a network our training wrote
    (its file records them; so does an ONNX export of it): those it was trained with.
    ``settings_overrides`` (search_factor, update_interval, template_factor, max_score_decay,
    size_update_rate) override both.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    config: MixFormerV2Config | None = variant_config(variant) if variant else None
    options = dict(backend_options or {})
    weights_given = checkpoint is not None or state_dict is not None
    trained_crop: dict[str, float] = {}
    if weights_given:
        model, record = load_model_and_record(checkpoint=checkpoint, state_dict=state_dict, config=config)
        trained_crop = trained_crop_factors(record)
    else:
        onnx_only = backend == "onnxruntime" and bool(options.get("onnx_model"))
        if onnx_only:
            from mixformer_ros.backends.onnxruntime_backend import read_manifest

            manifest = read_manifest(Path(options["onnx_model"]))
            if config is None:
                config = MixFormerV2Config.from_dict(manifest["config"])
            trained_crop = manifest.get("trained_crop", {})
            options.setdefault("verify_weights", False)  # the ONNX folder is the weights' only source
        elif config is None:
            raise ValueError("give a variant ('S' or 'B'), a checkpoint, a state_dict or an onnx_model")
        else:
            log.warning("NO CHECKPOINT GIVEN: MixFormerV2-%s runs with UNTRAINED random weights; its boxes are "
                        "meaningless", variant)
        model = build_mixformerv2(config)
    settings = preset_settings(preset, model.config, trained_crop).replace(**settings_overrides)
    from_record = {k: v for k, v in trained_crop.items() if k not in settings_overrides}
    if from_record:
        log.info("crop factors from the weights' training record: %s (instead of preset %s's)",
                 ", ".join(f"{k} {v:g}" for k, v in from_record.items()), preset)
    if backend == "onnxruntime":
        options.setdefault("trained_crop", trained_crop)  # for the manifest of an export it makes
        if num_threads is not None:
            options.setdefault("num_threads", num_threads)
    runner = create_backend(backend, model, device=device, precision=precision, **options)
    return MixFormerTracker(runner, model.config.template_size, model.config.search_size, settings)
