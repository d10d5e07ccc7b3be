"""OPE metrics: cross-checked against the got10k toolkit's own code on real CSRT results."""
from __future__ import annotations

import numpy as np
import pytest
from got10k.experiments import ExperimentGOT10k, ExperimentOTB
from got10k.utils.metrics import center_error as got_center_error
from got10k.utils.metrics import rect_iou as got_rect_iou

from paths import SOT_DIR
from mixformer_ros.evaluation import (
    box_iou,
    evaluate_tracker_dir,
    got10k_ao_sr,
    load_sequence,
    make_tracker,
    ope_metrics,
    run_dataset,
)
from mixformer_ros.evaluation.metrics import aggregate_got10k, center_error

# Two integer OTB/UAV sequences and the float, polygon-derived VOT one; a few seconds of CSRT.
CROSS_CHECK_SEQUENCES = ("Crossing", "bag", "wakeboard10")


class _Dataset:
    """The two things got10k's ExperimentOTB.report reads from a dataset: pairs and names."""

    def __init__(self, sequences):
        self.seq_names = [s.name for s in sequences]
        self._annos = [s.gt for s in sequences]

    def __len__(self):
        return len(self._annos)

    def __iter__(self):
        return iter((None, anno) for anno in self._annos)


def _got10k_otb_report(sequences, result_dir, report_dir, tracker):
    """got10k's own OTB report over our results files, without its dataset download."""
    experiment = ExperimentOTB.__new__(ExperimentOTB)
    experiment.dataset = _Dataset(sequences)
    experiment.result_dir = str(result_dir)
    experiment.report_dir = str(report_dir)
    experiment.nbins_iou = 21
    experiment.nbins_ce = 51
    return experiment.report([tracker])[tracker]


@pytest.fixture(scope="module")
def csrt_run(tmp_path_factory):
    sequences = [load_sequence(SOT_DIR / name) for name in CROSS_CHECK_SEQUENCES]
    results_dir = tmp_path_factory.mktemp("results")
    run_dataset(make_tracker("csrt"), sequences, results_dir / "csrt", progress=False)
    return sequences, results_dir


def test_ope_metrics_match_got10k_report_on_csrt_results(csrt_run, tmp_path):
    sequences, results_dir = csrt_run
    theirs = _got10k_otb_report(sequences, results_dir, tmp_path / "reports", "csrt")
    ours = evaluate_tracker_dir(results_dir / "csrt", sequences)

    for seq in sequences:
        mine, ref = ours.per_sequence[seq.name], theirs["seq_wise"][seq.name]
        np.testing.assert_allclose(mine["success_curve"], ref["success_curve"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine["precision_curve"], ref["precision_curve"], rtol=0, atol=1e-9)
        assert abs(mine["success_auc"] - ref["success_score"]) <= 1e-9
        assert abs(mine["precision"] - ref["precision_score"]) <= 1e-9
        assert abs(mine["op50"] - ref["success_rate"]) <= 1e-9
    overall = theirs["overall"]
    np.testing.assert_allclose(ours.overall["success_curve"], overall["success_curve"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.overall["precision_curve"], overall["precision_curve"], rtol=0, atol=1e-9)
    assert abs(ours.overall["success_auc"] - overall["success_score"]) <= 1e-9
    assert abs(ours.overall["precision"] - overall["precision_score"]) <= 1e-9
    # CSRT follows these targets: a sanity floor that catches a scoring against the wrong frames.
    assert ours.overall["success_auc"] > 0.3


def test_got10k_ao_sr_matches_got10k_evaluate(csrt_run):
    sequences, results_dir = csrt_run
    ours = evaluate_tracker_dir(results_dir / "csrt", sequences)
    # got10k's GOT-10k protocol: frame 0 left out, IoUs of all sequences pooled.
    pooled = []
    for seq in sequences:
        boxes = np.loadtxt(results_dir / "csrt" / f"{seq.name}.txt", delimiter=",")
        pooled.append(got_rect_iou(boxes[1:], seq.gt[1:]))
    pooled = np.concatenate(pooled)
    experiment = ExperimentGOT10k.__new__(ExperimentGOT10k)
    ao, sr, _, _ = experiment._evaluate(pooled, np.zeros(0))
    assert abs(ours.overall["ao"] - ao) <= 1e-9
    assert abs(ours.overall["sr50"] - sr) <= 1e-9


def test_iou_and_centre_error_match_got10k_on_random_boxes():
    rng = np.random.default_rng(7)
    a = np.column_stack([rng.uniform(0, 100, (500, 2)), rng.uniform(1, 60, (500, 2))])
    b = a + rng.normal(0, 15, a.shape)
    b[:, 2:] = np.abs(b[:, 2:]) + 1
    np.testing.assert_allclose(box_iou(a, b), got_rect_iou(a.copy(), b.copy()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(center_error(a, b), got_center_error(a, b), rtol=0, atol=1e-12)


def test_curves_follow_the_toolkit_conventions():
    gt = np.array([[10, 10, 20, 20]] * 4, dtype=float)
    # Hand-made frames with exact IoUs and centre errors:
    pred = np.array(
        [
            [10, 10, 20, 20],  # IoU 1, centre error 0
            [10, 10, 20, 10],  # IoU 0.5, centre error 5
            [30, 10, 20, 20],  # IoU 0, centre error 20
            [np.nan] * 4,  # no prediction
        ]
    )
    m = ope_metrics(pred, gt)
    assert m["success_curve"].shape == (21,) and m["precision_curve"].shape == (51,)
    assert m["success_curve"][0] == 0.5  # strictly above 0: the two overlapping frames
    assert m["success_curve"][10] == 0.25  # IoU 0.5 is not above 0.5
    assert m["success_curve"][20] == 0.0  # nothing is above 1
    assert m["op50"] == 0.25 and m["op75"] == 0.25
    assert m["precision_curve"][0] == 0.25 and m["precision_curve"][5] == 0.5
    assert m["precision"] == 0.75  # 20 px counts (<=)
    # normalised by the ground-truth 20x20: errors 0, 0.25, 1.0, inf
    assert m["norm_precision"] == 0.25
    assert m["norm_precision_curve"][25] == 0.5
    assert m["success_auc"] == pytest.approx(np.mean(m["success_curve"]))


def test_invalid_ground_truth_rules():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan] * 4, [0, 0, 0, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    absent = np.array([False, True, False, False])

    excluded = ope_metrics(pred, gt, absent)
    assert excluded["num_frames"] == 1 and excluded["num_invalid"] == 3
    assert excluded["success_auc"] == pytest.approx(20 / 21)

    failed = ope_metrics(pred, gt, absent, invalid="fail")
    assert failed["num_frames"] == 4
    assert failed["success_curve"][0] == 0.25 and failed["precision"] == 0.25

    got = got10k_ao_sr(pred, gt, absent)  # frame 0 never counts, the rest are invalid
    assert got["ious"].size == 0 and np.isnan(got["ao"])
    with pytest.raises(ValueError, match="invalid must be one of"):
        ope_metrics(pred, gt, invalid="ignore")


def test_got10k_pools_frames_across_sequences():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    one = got10k_ao_sr(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float), gt)
    two = got10k_ao_sr(np.array([[0, 0, 10, 10], [0, 0, 5, 10]], float), gt[:2])
    assert one["ao"] == 1.0 and two["ao"] == 0.5
    pooled = aggregate_got10k([one, two])
    assert pooled["ao"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert pooled["sr50"] == pytest.approx(2 / 3)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="shape"):
        ope_metrics(np.zeros((3, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="predictions for"):
        ope_metrics(np.zeros((3, 4)), np.ones((4, 4)))
