"""Losses of the MixFormerV2 recipe: box regression, per-side distribution distillation,
feature mimicking and the score head's binary cross-entropy. All boxes are cx,cy,w,h
normalised to the search crop unless a name says xyxy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _pairwise_terms(p: torch.Tensor, g: torch.Tensor, eps: float):
    """Intersection, union and enclosing box of matching xyxy rows."""
    iw = (torch.minimum(p[..., 2], g[..., 2]) - torch.maximum(p[..., 0], g[..., 0])).clamp(min=0)
    ih = (torch.minimum(p[..., 3], g[..., 3]) - torch.maximum(p[..., 1], g[..., 1])).clamp(min=0)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0]).clamp(min=0) * (p[..., 3] - p[..., 1]).clamp(min=0)
    area_g = (g[..., 2] - g[..., 0]).clamp(min=0) * (g[..., 3] - g[..., 1]).clamp(min=0)
    union = area_p + area_g - inter + eps
    enclose = torch.cat([torch.minimum(p[..., :2], g[..., :2]), torch.maximum(p[..., 2:], g[..., 2:])], dim=-1)
    return inter, union, enclose


def giou_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (1 - GIoU) and the per-row IoU (detached, for logging and score labels)."""
    inter, union, enc = _pairwise_terms(pred_xyxy, gt_xyxy, eps)
    iou = inter / union
    enc_area = (enc[..., 2] - enc[..., 0]) * (enc[..., 3] - enc[..., 1]) + eps
    giou = iou - (enc_area - union) / enc_area
    return (1 - giou).mean(), iou.detach()


def ciou_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean (1 - CIoU): IoU, centre distance over the enclosing diagonal, aspect-ratio consistency."""
    inter, union, enc = _pairwise_terms(pred_xyxy, gt_xyxy, eps)
    iou = inter / union
    diag = (enc[..., 2] - enc[..., 0]) ** 2 + (enc[..., 3] - enc[..., 1]) ** 2 + eps
    centre = ((pred_xyxy[..., :2] + pred_xyxy[..., 2:]) / 2 - (gt_xyxy[..., :2] + gt_xyxy[..., 2:]) / 2).pow(2).sum(-1)
    wp, hp = (pred_xyxy[..., 2] - pred_xyxy[..., 0]).clamp(min=eps), (pred_xyxy[..., 3] - pred_xyxy[..., 1]).clamp(min=eps)
    wg, hg = (gt_xyxy[..., 2] - gt_xyxy[..., 0]).clamp(min=eps), (gt_xyxy[..., 3] - gt_xyxy[..., 1]).clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(wg / hg) - torch.atan(wp / hp)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return (1 - iou + centre / diag + alpha * v).mean()


def corner_maps_to_side_probs(corner_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dense corner heatmaps -> the four per-side distributions the sparse student predicts.

    corner_logits: (B, 2, H, W); channel 0 is the top-left corner, 1 the bottom-right, each
    over an H x W grid whose cells are the student's bins (row = y bin, column = x bin).
    Each map is a joint distribution over (y, x) after a softmax over all cells; summing out one
    axis leaves the marginal of the other: left = P_tl summed over y, top = P_tl summed over x,
    right and bottom likewise from P_br.
    """
    B, _, H, W = corner_logits.shape
    joint = corner_logits.flatten(2).softmax(-1).view(B, 2, H, W)  # (B, 2, H, W), each map sums to 1
    return {
        "prob_l": joint[:, 0].sum(1),  # (B, W)
        "prob_t": joint[:, 0].sum(2),  # (B, H)
        "prob_r": joint[:, 1].sum(1),
        "prob_b": joint[:, 1].sum(2),
    }


SIDES = ("l", "t", "r", "b")


def side_distribution_kl(student_logits: torch.Tensor, teacher_probs: dict[str, torch.Tensor], eps: float = 1e-8) -> torch.Tensor:
    """KL(teacher || student) per side, summed over bins, averaged over sides and batch.

    student_logits: (B, 4, bins) in side order l, t, r, b (the network's ``side_logits``).
    """
    log_q = student_logits.log_softmax(-1)  # (B, 4, bins)
    p = torch.stack([teacher_probs[f"prob_{s}"] for s in SIDES], dim=1).detach()  # (B, 4, bins)
    return (p * (torch.log(p + eps) - log_q)).sum(-1).mean()


def side_label_distribution(gt_xyxy: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Ground-truth sides as distributions over bins: each coordinate split between its two
    neighbouring bins so that the expectation is exact (bin i sits at i / num_bins).

    gt_xyxy: (B, 4) normalised x0, y0, x1, y1 -> (B, 4, num_bins) in side order l, t, r, b.
    """
    u = (gt_xyxy * num_bins).clamp(0, num_bins - 1)  # (B, 4) position in bin units
    lo = u.floor().long().clamp(max=num_bins - 2)
    w_hi = (u - lo.float()).clamp(0, 1)
    target = torch.zeros(*gt_xyxy.shape, num_bins, device=gt_xyxy.device)
    target.scatter_(-1, lo.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    target.scatter_add_(-1, (lo + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
    return target


def side_label_loss(student_logits: torch.Tensor, gt_xyxy: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the per-side logits against the ground truth's two-bin distributions.

    Not in the official recipe (there the per-side distributions come from the teacher); it gives
    a from-scratch network a strong gradient while its softmax is still saturated on wrong bins.
    """
    target = side_label_distribution(gt_xyxy, student_logits.shape[-1])
    return -(target * student_logits.log_softmax(-1)).sum(-1).mean()


def feature_mimic_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """MSE between matching token sequences (B, N, C) of a student and a teacher layer."""
    return F.mse_loss(student_tokens, teacher_tokens.detach())


def score_loss(score_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the confidence logit against 1 (target present) / 0 (absent)."""
    return F.binary_cross_entropy_with_logits(score_logits, labels.float())
