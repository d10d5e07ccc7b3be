"""Deep-to-shallow distillation tools: progressive layer elimination and MLP-ratio reduction.

During elimination the chosen blocks keep running but their two residual branches are
multiplied by a rate that a schedule takes from 1 to 0. At rate 0 such a block is the identity,
so dropping it and renumbering the rest gives a shallower network with the same outputs.
"""

from __future__ import annotations

import math

import torch

from mixformer_ros.model import MixFormerV2, MixFormerV2Config
from mixformer_ros.model.network import Block


class DecayableBlock(Block):
    """A Block whose attention and MLP branches are scaled by `residual_scale` (1 = unchanged)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__(dim, num_heads, mlp_hidden)
        self.residual_scale = 1.0

    def _finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_scale * attn_out
        return x + self.residual_scale * self.mlp(self.norm2(x))


def make_decayable(net: MixFormerV2, layers: list[int]) -> list[DecayableBlock]:
    """Swap the given blocks for DecayableBlocks with the same weights (state_dict keys unchanged)."""
    cfg = net.config
    blocks = net.backbone.blocks
    swapped = []
    for i in layers:
        if not 0 <= i < len(blocks):
            raise ValueError(f"cannot eliminate layer {i}: the network has {len(blocks)} layers")
        old = blocks[i]
        new = DecayableBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden)
        new.load_state_dict(old.state_dict())
        new.to(next(old.parameters()).device)
        blocks[i] = new
        swapped.append(new)
    return swapped


DECAY_SHAPES = ("cosine", "linear")


def elimination_rate(progress: float, start: float, end: float, shape: str = "cosine") -> float:
    """Residual scale of an eliminated layer at training progress in [0, 1].

    1 before `start`, 0 from `end` on; in between a half cosine (smooth at both ends) or a line.
    """
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"elimination window must satisfy 0 <= start < end <= 1, got start={start} end={end}")
    if progress <= start:
        return 1.0
    if progress >= end:
        return 0.0
    t = (progress - start) / (end - start)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "linear":
        return 1.0 - t
    raise ValueError(f"unknown elimination shape {shape!r}; expected one of {DECAY_SHAPES}")


def set_residual_scale(blocks: list[DecayableBlock], rate: float) -> None:
    for b in blocks:
        b.residual_scale = rate


def prune_layers(
    state_dict: dict[str, torch.Tensor], cfg: MixFormerV2Config, keep: list[int]
) -> tuple[dict[str, torch.Tensor], MixFormerV2Config]:
    """Keep only the listed blocks, renumbered 0..len(keep)-1 in order; other keys unchanged."""
    keep = sorted(keep)
    if not keep or keep[0] < 0 or keep[-1] >= cfg.depth or len(set(keep)) != len(keep):
        raise ValueError(f"keep={keep} is not a set of layer indices of a depth-{cfg.depth} network")
    renumber = {old: new for new, old in enumerate(keep)}
    out = {}
    prefix = "backbone.blocks."
    for k, v in state_dict.items():
        if k.startswith(prefix):
            idx, rest = k[len(prefix):].split(".", 1)
            if int(idx) not in renumber:
                continue
            k = f"{prefix}{renumber[int(idx)]}.{rest}"
        out[k] = v
    return out, MixFormerV2Config(**{**cfg.to_dict(), "depth": len(keep)})


def reduce_mlp(
    state_dict: dict[str, torch.Tensor], cfg: MixFormerV2Config, mlp_ratio: float
) -> tuple[dict[str, torch.Tensor], MixFormerV2Config]:
    """Initialise a narrower MLP from a wider one by keeping, per block, the hidden units whose
    weights have the largest norm (so the student starts close to the teacher's function)."""
    new_cfg = MixFormerV2Config(**{**cfg.to_dict(), "mlp_ratio": mlp_ratio})
    hidden = new_cfg.mlp_hidden
    if hidden > cfg.mlp_hidden:
        raise ValueError(f"MLP ratio can only shrink: {cfg.mlp_ratio} -> {mlp_ratio}")
    out = dict(state_dict)
    for i in range(cfg.depth):
        p = f"backbone.blocks.{i}.mlp."
        fc1_w, fc1_b, fc2_w = state_dict[p + "fc1.weight"], state_dict[p + "fc1.bias"], state_dict[p + "fc2.weight"]
        importance = fc1_w.norm(dim=1) * fc2_w.norm(dim=0)  # (hidden,)
        idx = importance.topk(hidden).indices.sort().values
        out[p + "fc1.weight"] = fc1_w[idx].clone()     # (hidden', C)
        out[p + "fc1.bias"] = fc1_b[idx].clone()
        out[p + "fc2.weight"] = fc2_w[:, idx].clone()  # (C, hidden')
    return out, new_cfg
