"""Checkpoint I/O: the official file ({'net': state_dict, ...}), a bare state_dict, and our own
format ({'net': state_dict, 'config': {...}, 'format': ...}). Loading is always
``torch.load(weights_only=True)``; every failure names the file and the offending keys."""
from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
from pathlib import Path

import torch

from ..files import replace_atomically
from .config import MixFormerV2Config
from .network import MixFormerV2, build_mixformerv2

CHECKPOINT_FORMAT = "mixformer_ros/1"
# Where checkpoints keep their weights: official and ours 'net'; other trainers 'state_dict' or 'model'.
STATE_DICT_KEYS = ("net", "state_dict", "model")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the network."""


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], MixFormerV2Config | None, dict]:
    """Returns (state_dict, recorded config or None, the whole loaded object's other keys)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc):  # a class or function the weights-only unpickler does not allow
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True); the file holds Python objects other than "
                f"tensors and plain containers. If you trust it, re-save only its 'net' state_dict. Detail: {exc}"
            ) from exc
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {exc}") from exc
    except Exception as exc:  # garbage bytes surface as almost any exception type inside the unpickler
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    container = next((key for key in STATE_DICT_KEYS if isinstance(obj.get(key), dict)), None)
    if container is not None:
        state_dict, extra = obj[container], {k: v for k, v in obj.items() if k != container}
    else:
        state_dict, extra = obj, {}
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors (looked under {', '.join(STATE_DICT_KEYS)} "
                              f"and at the top level; found keys {sorted(obj)[:10]})")
    state_dict = strip_prefix(state_dict, "module.")
    config = None
    if isinstance(extra.get("config"), dict):
        try:
            config = MixFormerV2Config.from_dict(extra["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its recorded network config is not usable: {exc}") from exc
    return state_dict, config, extra


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop a DistributedDataParallel-style prefix when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def config_from_state_dict(state_dict: dict[str, torch.Tensor], num_heads: int | None = None) -> MixFormerV2Config:
    """Infer depth, width, MLP size, input sizes and bin count from tensor shapes.

    The head count is not visible in the shapes; it defaults to embed_dim // 64 (12 for the
    released 768-wide models).
    """
    try:
        patch = state_dict["backbone.patch_embed.proj.weight"]  # (C, 3, p, p)
        embed_dim, patch_size = patch.shape[0], patch.shape[-1]
        depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("backbone.blocks."))
        mlp_hidden = state_dict["backbone.blocks.0.mlp.fc1.weight"].shape[0]
        template_grid = math.isqrt(state_dict["backbone.pos_embed_t"].shape[1])
        search_grid = math.isqrt(state_dict["backbone.pos_embed_s"].shape[1])
        num_bins = state_dict["box_head.layers.1.0.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot infer the network shape from the state_dict: missing {exc}") from exc
    if num_heads is None:
        # 64-wide heads, as in the released networks (768 wide, 12 heads), or the nearest count that divides.
        num_heads = next(h for h in range(max(1, embed_dim // 64), 0, -1) if embed_dim % h == 0)
        if embed_dim != 768:
            # For other widths the guess may be wrong, and a wrong head count loads without error and
            # computes something else.
            log.warning("the checkpoint records no config: guessing %d attention head(s) for width %d; pass a "
                        "config or save the file with save_checkpoint so it records its own", num_heads, embed_dim)
    mlp_ratio = mlp_hidden / embed_dim
    if int(embed_dim * mlp_ratio) != mlp_hidden:  # the float product fell just under the integer
        mlp_ratio = (mlp_hidden + 0.5) / embed_dim
    return MixFormerV2Config(
        depth=depth,
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        template_size=template_grid * patch_size,
        search_size=search_grid * patch_size,
        patch_size=patch_size,
        num_bins=num_bins,
    )


def load_weights(model: MixFormerV2, state_dict: dict[str, torch.Tensor], source: str = "state_dict") -> None:
    """Strict load that reports every missing, unexpected and mis-shaped key by name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    # Integer, boolean or complex values in place of weights would be cast without a word.
    mismatched += [
        f"{k}: checkpoint {state_dict[k].dtype} vs model {expected[k].dtype}"
        for k in sorted(set(expected) & set(state_dict))
        if expected[k].is_floating_point() and not state_dict[k].is_floating_point()
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"wrong shapes or types {mismatched}")
        raise CheckpointError(f"{source} does not fit the network: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def load_model(
    checkpoint: str | os.PathLike | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    config: str | MixFormerV2Config | None = None,
) -> MixFormerV2:
    """Build a network and load weights into it.

    The config is taken, in order, from the argument, from the checkpoint's own record, or
    inferred from the tensor shapes.
    """
    return load_model_and_record(checkpoint, state_dict, config)[0]


def load_model_and_record(
    checkpoint: str | os.PathLike | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    config: str | MixFormerV2Config | None = None,
) -> tuple[MixFormerV2, dict]:
    """``load_model``, plus the file's keys besides the weights ({} for a state_dict), such as the
    training record that ``trained_crop_factors`` reads."""
    if (checkpoint is None) == (state_dict is None):
        raise ValueError("give exactly one of checkpoint= or state_dict=")
    source = "state_dict"
    recorded, extra = None, {}
    if checkpoint is not None:
        state_dict, recorded, extra = read_checkpoint(checkpoint)
        source = str(checkpoint)
        if extra.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{source} is a '{extra['format']}' file from training, not a tracker network "
                f"('{CHECKPOINT_FORMAT}' or an official file); track with the run's model.pth.tar"
            )
    else:
        state_dict = strip_prefix(state_dict, "module.")  # as read_checkpoint does for files
    cfg = config if config is not None else (recorded or config_from_state_dict(state_dict))
    model = build_mixformerv2(cfg)
    load_weights(model, state_dict, source)
    return model, extra


def trained_crop_factors(record: dict) -> dict[str, float]:
    """The search and template crop factors a file written by our training was trained with.

    The network learnt targets at the scale these give, so the tracker should crop the same way.
    Official files and bare state_dicts record none: {}.
    """
    crop = record.get("training")
    for key in ("data", "crop"):
        crop = crop.get(key) if isinstance(crop, dict) else None
    if not isinstance(crop, dict):
        return {}
    return {name: float(value) for name in ("search_factor", "template_factor")
            if isinstance(value := crop.get(name), numbers.Real) and not isinstance(value, bool)}


def save_checkpoint(path: str | os.PathLike, model: MixFormerV2, **extra) -> None:
    """Official layout ('net') plus our config record, so the file alone rebuilds the network.

    ``extra`` values must be plain data (numbers, strings, lists, dicts, tensors) so the file
    stays loadable with weights_only=True.
    """
    payload = {"net": model.state_dict(), "config": model.config.to_dict(), "format": CHECKPOINT_FORMAT, **extra}
    replace_atomically(path, lambda tmp: torch.save(payload, tmp))  # never leave a half-written checkpoint behind
