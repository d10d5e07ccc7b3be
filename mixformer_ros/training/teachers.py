"""The dense-head teacher for dense-to-sparse distillation: a MixViT-style network.

It shares the MixFormerV2 backbone (same module, same weights layout under ``backbone.``) but
predicts the box from the search tokens with a convolutional corner head: two heatmaps, top-left
and bottom-right, over the same bin grid the sparse student uses. Marginalising those heatmaps
gives per-side distributions that the student's prediction tokens learn to match.
``DenseAuxNetwork`` puts the same corner head on a sparse network's own search tokens, so that
both learn in one run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mixformer_ros.model import MixFormerV2, MixFormerV2Config
from mixformer_ros.model.network import NUM_PRED_TOKENS, Backbone

from .losses import corner_maps_to_side_probs

DENSE_TEACHER_FORMAT = "mixformer_ros/dense-teacher/1"
DENSE_AUX_FORMAT = "mixformer_ros/dense-aux/1"  # resumable checkpoints of DenseAuxNetwork


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CornerHead(nn.Module):
    """Search feature map (B, C, h, w) -> corner logits (B, 2, bins, bins), top-left then bottom-right."""

    def __init__(self, dim: int, num_bins: int, channels: int = 64):
        super().__init__()
        self.num_bins = num_bins
        self.tower = nn.Sequential(_conv_bn_relu(dim, channels), _conv_bn_relu(channels, channels // 2))
        self.out = nn.Conv2d(channels // 2, 2, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.tower(feat))  # (B, 2, h, w)
        return F.interpolate(logits, size=(self.num_bins, self.num_bins), mode="bilinear", align_corners=False)


def _corner_logits(head: CornerHead, tokens: torch.Tensor, cfg: MixFormerV2Config) -> torch.Tensor:
    """Backbone output tokens (B, 2*Nt + Ns + 4, C) -> corner logits from the search tokens."""
    start = 2 * cfg.template_tokens
    s = tokens[:, start:start + cfg.search_tokens]  # (B, Ns, C)
    grid = cfg.search_size // cfg.patch_size
    return head(s.transpose(1, 2).reshape(s.shape[0], -1, grid, grid))  # (B, 2, bins, bins)


def dense_outputs(corner_logits: torch.Tensor) -> dict:
    """Corner logits -> the sparse network's output keys (pred_boxes, prob_l/t/r/b, side_logits)."""
    out = corner_maps_to_side_probs(corner_logits)
    pos = torch.arange(corner_logits.shape[-1], device=corner_logits.device) / corner_logits.shape[-1]
    x0, y0, x1, y1 = ((out[f"prob_{s}"] * pos).sum(-1) for s in ("l", "t", "r", "b"))  # each (B,)
    out["pred_boxes"] = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1).unsqueeze(1)  # (B, 1, 4)
    out["corner_logits"] = corner_logits
    # Log-marginals stand in for per-side logits (log_softmax of them gives them back), so the
    # same per-side losses apply to the dense teacher and the sparse network.
    out["side_logits"] = torch.stack([out[f"prob_{s}"] for s in ("l", "t", "r", "b")], 1).clamp_min(1e-12).log()
    return out


class DenseTeacher(nn.Module):
    """MixViT-style teacher: MixFormerV2 backbone + corner head. Same forward signature and the
    same output keys (pred_boxes, prob_l/t/r/b) as the sparse network, plus corner_logits."""

    def __init__(self, cfg: MixFormerV2Config):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.corner_head = CornerHead(cfg.embed_dim, cfg.num_bins)
        self.backbone.reset_position_tables()
        nn.init.trunc_normal_(self.backbone.reg_tokens, std=0.02)

    def forward(self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor) -> dict:
        tokens = self.backbone(template, online_template, search)
        return dense_outputs(_corner_logits(self.corner_head, tokens, self.config))


class DenseAuxNetwork(MixFormerV2):
    """The sparse MixFormerV2 with the teacher's corner head on its search tokens, for one-stage
    training from scratch (``model.kind: dense_aux``; our shortcut, not the paper's two stages).

    The corner head gives the backbone a dense localisation signal from the first step, and its
    marginals teach the prediction tokens (KL) while both learn. ``sparse()`` drops the head.
    """

    def __init__(self, cfg: MixFormerV2Config):
        super().__init__(cfg)
        self.corner_head = CornerHead(cfg.embed_dim, cfg.num_bins)

    def forward(self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor) -> dict:
        tokens = self.backbone(template, online_template, search)
        out = self.heads(tokens[:, -NUM_PRED_TOKENS:])
        out["dense"] = dense_outputs(_corner_logits(self.corner_head, tokens, self.config))
        return out

    def sparse(self) -> MixFormerV2:
        net = MixFormerV2(self.config)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("corner_head.")}
        net.load_state_dict(state, strict=True)
        return net
