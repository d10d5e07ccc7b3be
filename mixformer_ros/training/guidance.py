"""Attention guidance for the prediction tokens (our addition; not in the paper).

A freshly initialised sparse network must discover, through attention alone, which search tokens
hold the target before its four prediction tokens can say anything about the box; on a small CPU
budget it stays at "the same box everywhere" for thousands of steps. This loss tells the chosen
blocks' prediction-token queries where to look: cross-entropy between their attention over all
keys and the ground-truth box's share of each search-token cell. It reads the blocks' inputs
with forward pre-hooks and recomputes queries and keys with the blocks' own weights, so the
network code is untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mixformer_ros.model.network import NUM_PRED_TOKENS


class BlockInputTap:
    """Keeps the input tokens of chosen blocks from the last forward pass."""

    def __init__(self, blocks: nn.Sequential, layers: list[int]):
        self.layers = [i % len(blocks) for i in layers]
        self.blocks = blocks
        self.inputs: dict[int, torch.Tensor] = {}
        for i in self.layers:
            blocks[i].register_forward_pre_hook(self._hook(i))

    def _hook(self, i: int):
        def hook(_module, args):
            self.inputs[i] = args[0]
        return hook


def box_cell_distribution(gt_cxcywh: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 4) normalised boxes -> (B, grid*grid) share of the box area in each token cell (row-major)."""
    x0, y0 = gt_cxcywh[:, 0] - gt_cxcywh[:, 2] / 2, gt_cxcywh[:, 1] - gt_cxcywh[:, 3] / 2
    x1, y1 = x0 + gt_cxcywh[:, 2], y0 + gt_cxcywh[:, 3]
    edges = torch.arange(grid + 1, device=gt_cxcywh.device, dtype=gt_cxcywh.dtype) / grid
    ox = (torch.minimum(x1[:, None], edges[None, 1:]) - torch.maximum(x0[:, None], edges[None, :-1])).clamp(min=0)  # (B, g)
    oy = (torch.minimum(y1[:, None], edges[None, 1:]) - torch.maximum(y0[:, None], edges[None, :-1])).clamp(min=0)  # (B, g)
    area = (oy[:, :, None] * ox[:, None, :]).flatten(1)  # (B, g*g)
    return area / area.sum(1, keepdim=True).clamp(min=1e-12)


def prediction_token_attention_loss(tap: BlockInputTap, gt_cxcywh: torch.Tensor, num_template_tokens: int,
                                    search_grid: int) -> torch.Tensor:
    """Mean over the tapped blocks, heads and the four prediction tokens of -sum target * log attention."""
    target = box_cell_distribution(gt_cxcywh, search_grid)  # (B, Ns)
    ns = search_grid * search_grid
    losses = []
    for i in tap.layers:
        block, x = tap.blocks[i], tap.inputs[i]
        B, N, C = x.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(block.norm1(x)).reshape(B, N, 3, heads, C // heads)
        q, k = qkv[:, -NUM_PRED_TOKENS:, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, h, 4, D), (B, h, N, D)
        log_attn = (q @ k.transpose(-1, -2) / math.sqrt(C // heads)).log_softmax(-1)  # (B, h, 4, N)
        search = log_attn[..., num_template_tokens:num_template_tokens + ns]  # (B, h, 4, Ns)
        losses.append(-(search * target[:, None, None, :]).sum(-1).mean())
    return torch.stack(losses).mean()
