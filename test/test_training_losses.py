"""Losses and schedules match their definitions."""
from __future__ import annotations

import math

import pytest
import torch

from mixformer_ros.training.elimination import elimination_rate
from mixformer_ros.training.losses import (ciou_loss, corner_maps_to_side_probs, cxcywh_to_xyxy, giou_loss,
                                           side_distribution_kl, side_label_distribution, side_label_loss)


def test_corner_marginalisation_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 7, generator=g)  # (B, corners, H=y bins, W=x bins)
    out = corner_maps_to_side_probs(logits)
    for b in range(2):
        for c, (horiz, vert) in enumerate((("prob_l", "prob_t"), ("prob_r", "prob_b"))):
            z = sum(math.exp(logits[b, c, y, x]) for y in range(5) for x in range(7))
            for x in range(7):
                expected = sum(math.exp(logits[b, c, y, x]) for y in range(5)) / z
                assert out[horiz][b, x].item() == pytest.approx(expected, rel=1e-5)
            for y in range(5):
                expected = sum(math.exp(logits[b, c, y, x]) for x in range(7)) / z
                assert out[vert][b, y].item() == pytest.approx(expected, rel=1e-5)
    for k in ("prob_l", "prob_t", "prob_r", "prob_b"):
        assert torch.allclose(out[k].sum(-1), torch.ones(2))


def test_kl_is_zero_for_identical_distributions_and_positive_otherwise():
    logits = torch.randn(3, 4, 16)
    probs = logits.softmax(-1)
    teacher = {f"prob_{s}": probs[:, i] for i, s in enumerate("ltrb")}
    assert side_distribution_kl(logits, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert side_distribution_kl(torch.randn(3, 4, 16), teacher).item() > 0


def test_side_label_distribution_expectation_is_the_ground_truth():
    gt = torch.tensor([[0.10, 0.25, 0.52, 0.9]])
    target = side_label_distribution(gt, 32)
    positions = torch.arange(32) / 32
    assert torch.allclose(target.sum(-1), torch.ones(1, 4))
    assert torch.allclose((target * positions).sum(-1), gt, atol=1e-6)
    # The loss is lowest when the logits put their mass where the target does.
    good = torch.log(target + 1e-6)
    assert side_label_loss(good, gt) < side_label_loss(torch.zeros(1, 4, 32), gt)


def test_box_losses_vanish_on_a_perfect_box_and_grow_with_error():
    gt = cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, 0.2, 0.3]]))
    off = cxcywh_to_xyxy(torch.tensor([[0.6, 0.45, 0.25, 0.2]]))
    far = cxcywh_to_xyxy(torch.tensor([[0.9, 0.1, 0.1, 0.1]]))
    giou_same, iou_same = giou_loss(gt, gt)
    assert giou_same.item() == pytest.approx(0.0, abs=1e-5) and iou_same.item() == pytest.approx(1.0, abs=1e-5)
    assert ciou_loss(gt, gt).item() == pytest.approx(0.0, abs=1e-5)
    assert 0 < giou_loss(off, gt)[0] < giou_loss(far, gt)[0]
    assert giou_loss(far, gt)[0] > 1  # disjoint boxes: GIoU < 0
    assert 0 < ciou_loss(off, gt) < ciou_loss(far, gt)


def test_elimination_schedule_follows_its_definition():
    assert elimination_rate(0.0, 0.2, 0.6) == 1.0
    assert elimination_rate(0.2, 0.2, 0.6) == 1.0
    assert elimination_rate(0.4, 0.2, 0.6) == pytest.approx(0.5)  # half-way through a half cosine
    assert elimination_rate(0.3, 0.2, 0.6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert elimination_rate(0.6, 0.2, 0.6) == 0.0
    assert elimination_rate(1.0, 0.2, 0.6) == 0.0
    assert elimination_rate(0.3, 0.2, 0.6, "linear") == pytest.approx(0.75)
    rates = [elimination_rate(p / 100, 0.1, 0.9) for p in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never increases
    with pytest.raises(ValueError):
        elimination_rate(0.5, 0.6, 0.4)
    with pytest.raises(ValueError):
        elimination_rate(0.5, 0.1, 0.9, "exp")


def test_box_cell_distribution_is_the_area_share_per_token_cell():
    from mixformer_ros.training.guidance import box_cell_distribution

    # A box covering exactly cells (row 1, cols 1-2) of a 4x4 grid, and one straddling four cells.
    boxes = torch.tensor([[0.5, 0.375, 0.5, 0.25], [0.5, 0.5, 0.25, 0.25]])
    dist = box_cell_distribution(boxes, 4).view(2, 4, 4)
    assert torch.allclose(dist.sum((1, 2)), torch.ones(2))
    expected = torch.zeros(4, 4)
    expected[1, 1] = expected[1, 2] = 0.5
    assert torch.allclose(dist[0], expected, atol=1e-6)
    assert torch.allclose(dist[1][1:3, 1:3], torch.full((2, 2), 0.25), atol=1e-6)
