"""Sequence readers, result files, the OpenCV runners and the evaluation command line."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

from paths import OPENCV_MODELS_DIR, REPO_ROOT, SOT_DIR
from mixformer_ros.evaluation import (
    evaluate_tracker_dir,
    load_dataset,
    load_sequence,
    make_tracker,
    read_result,
    run_sequence,
    write_result,
)
from mixformer_ros.evaluation.datasets import Sequence, detect_format, polygon_to_xywh
from mixformer_ros.evaluation.results import SequenceResult

SUBCOMMANDS = ("run", "metrics", "compare", "to-bag", "eval-bag", "replay")


def _frames(folder, n, names=None, size=(48, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = names(i) if names else f"{i + 1:08d}.jpg"
        cv2.imwrite(str(folder / name), np.full((*size, 3), 20 * i, np.uint8))


def test_otb_reader_on_tab_and_comma_files():
    crossing = load_sequence(SOT_DIR / "Crossing")  # tab separated
    dragon = load_sequence(SOT_DIR / "DragonBaby")  # comma separated
    assert len(crossing) == 120 and crossing.gt.shape == (120, 4)
    np.testing.assert_array_equal(crossing.gt[0], [205, 151, 17, 50])
    np.testing.assert_array_equal(dragon.gt[0], [160, 83, 56, 65])
    assert crossing.frames[0].name == "0001.jpg" and not crossing.absent.any()
    assert crossing.read_frame(0).shape == (240, 360, 3)


def test_dataset_folder_lists_all_eight_sequences():
    names = [s.name for s in load_dataset(SOT_DIR)]
    assert names == ["Crossing", "DragonBaby", "MotorRolling", "Woman", "bag", "boat1", "person12_1", "wakeboard10"]


def test_vot_polygons_become_the_axis_aligned_box(tmp_path):
    _frames(tmp_path / "seq" / "color", 2)
    (tmp_path / "seq" / "groundtruth.txt").write_text("10,20,30,20,30,40,10,40\n5.5,6,9,1,12,8,7,12\n")
    seq = load_sequence(tmp_path / "seq")
    assert detect_format(tmp_path / "seq") == "vot"
    np.testing.assert_allclose(seq.gt, [[10, 20, 20, 20], [5.5, 1, 6.5, 11]])
    assert seq.polygons.shape == (2, 8)
    # The data set's bag/groundtruth_rect.txt was derived with the same rule.
    bag_poly = np.loadtxt(SOT_DIR / "bag" / "groundtruth.txt", delimiter=",")
    np.testing.assert_allclose(polygon_to_xywh(bag_poly), load_sequence(SOT_DIR / "bag").gt, atol=6e-4)


def test_got10k_reader_marks_absent_frames_and_pads_the_test_split(tmp_path):
    folder = tmp_path / "GOT-10k_Val_000001"
    _frames(folder, 3)
    (folder / "groundtruth.txt").write_text("1,2,10,12\n2,3,10,12\n0,0,0,0\n")
    (folder / "absence.label").write_text("0\n0\n1\n")
    seq = load_sequence(folder)
    assert detect_format(folder) == "got10k"
    assert seq.absent.tolist() == [False, False, True]

    test_split = tmp_path / "GOT-10k_Test_000001"
    _frames(test_split, 3)
    (test_split / "groundtruth.txt").write_text("1,2,10,12\n")
    (test_split / "meta_info.ini").write_text("[METAINFO]\n")
    seq = load_sequence(test_split)
    np.testing.assert_array_equal(seq.gt[0], [1, 2, 10, 12])
    assert np.isnan(seq.gt[1:]).all()


def test_lasot_reader_uses_occlusion_and_out_of_view(tmp_path):
    folder = tmp_path / "airplane-1"
    _frames(folder / "img", 4)
    (folder / "groundtruth.txt").write_text("1,2,10,12\n1,2,10,12\n1,2,10,12\n1,2,10,12\n")
    (folder / "full_occlusion.txt").write_text("0,1,0,0")
    (folder / "out_of_view.txt").write_text("0,0,0,1")
    seq = load_sequence(folder)
    assert detect_format(folder) == "lasot"
    assert seq.absent.tolist() == [False, True, False, True]


def _otb_folder(folder, n_images, gt_files):
    """An OTB folder with n_images blank frames (never decoded here) and the given ground-truth files."""
    (folder / "img").mkdir(parents=True)
    for i in range(n_images):
        (folder / "img" / f"{i + 1:04d}.jpg").touch()
    for name, rows in gt_files.items():
        (folder / name).write_text("".join(f"{r + 1},2,10,12\n" for r in range(rows)))


def test_otb100_special_folders(tmp_path):
    root = tmp_path / "OTB100"
    _otb_folder(root / "Jogging", 5, {"groundtruth_rect.1.txt": 5, "groundtruth_rect.2.txt": 5})
    _otb_folder(root / "Human4", 4, {"groundtruth_rect.2.txt": 4})
    _otb_folder(root / "David", 770, {"groundtruth_rect.txt": 471})  # annotated: frames 300-770
    _otb_folder(root / "Football1", 80, {"groundtruth_rect.txt": 74})  # annotated: frames 1-74
    seqs = {seq.name: seq for seq in load_dataset(root)}
    assert sorted(seqs) == ["David", "Football1", "Human4-2", "Jogging-1", "Jogging-2"]
    assert [p.name for p in seqs["David"].frames[:: len(seqs["David"]) - 1]] == ["0300.jpg", "0770.jpg"]
    assert [p.name for p in seqs["Football1"].frames[::73]] == ["0001.jpg", "0074.jpg"]
    assert seqs["Jogging-2"].frames == seqs["Jogging-1"].frames
    # One target by name, through the API and the command line's --sequences.
    (jogging_2,) = load_dataset(root, names=["Jogging-2"])
    np.testing.assert_array_equal(jogging_2.gt, seqs["Jogging-2"].gt)
    with pytest.raises(ValueError, match="holds 2 targets; load one of them: Jogging-1, Jogging-2"):
        load_sequence(root / "Jogging")
    with pytest.raises(FileNotFoundError, match="Jogging-3 does not exist"):
        load_sequence(root / "Jogging-3")


def test_dataset_root_one_level_above_the_sequences_lasot_tree(tmp_path):
    for name in ("airplane/airplane-1", "airplane/airplane-2", "bear/bear-1"):
        folder = tmp_path / "LaSOT" / name
        _frames(folder / "img", 2)
        (folder / "groundtruth.txt").write_text("1,2,10,12\n1,2,10,12\n")
        (folder / "full_occlusion.txt").write_text("0,0")
        (folder / "out_of_view.txt").write_text("0,1")
    assert [seq.name for seq in load_dataset(tmp_path / "LaSOT")] == ["airplane-1", "airplane-2", "bear-1"]


def test_readers_explain_bad_input(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sequence(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a sequence folder"):
        load_sequence(tmp_path / "empty")
    folder = tmp_path / "bad"
    _frames(folder / "img", 2)
    (folder / "groundtruth_rect.txt").write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(ValueError, match="bad/groundtruth_rect.txt:2"):
        load_sequence(folder)
    (folder / "groundtruth_rect.txt").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match="2 frames, 1 ground-truth rows"):
        load_sequence(folder)
    # Loaded as a dataset root, the one broken sequence says what is wrong with it...
    with pytest.raises(ValueError, match="2 frames, 1 ground-truth rows"):
        load_dataset(folder)
    # ...and among good ones it is left out with a warning.
    good = tmp_path / "good"
    _frames(good / "img", 2)
    (good / "groundtruth_rect.txt").write_text("1,2,3,4\nnan\n")  # a lone 'nan': no box on frame 2
    with caplog.at_level(logging.WARNING):
        assert [seq.name for seq in load_dataset(tmp_path)] == ["good"]
    assert "skipping" in caplog.text and "bad" in caplog.text
    assert np.isnan(load_sequence(good).gt[1]).all()


def test_results_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(3)
    result = SequenceResult("seq", rng.uniform(0, 500, (20, 4)), rng.uniform(0, 0.1, 20), rng.uniform(0, 1, 20))
    result.scores[0] = np.nan
    path = write_result(tmp_path / "trk", result)
    assert path.read_text().splitlines()[0].count(",") == 3  # got10k/pysot layout
    back = read_result(tmp_path / "trk", "seq")
    np.testing.assert_array_equal(back.boxes, result.boxes)
    np.testing.assert_array_equal(back.times, result.times)
    np.testing.assert_array_equal(back.scores, result.scores)
    # files written by other toolkits (3 decimals, tabs) read too
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "seq.txt").write_text("1.000\t2.500\t3.000\t4.000\n")
    np.testing.assert_array_equal(read_result(tmp_path / "other", "seq").boxes, [[1, 2.5, 3, 4]])


def test_a_result_rewritten_without_times_loses_the_old_times(tmp_path):
    boxes = np.ones((3, 4))
    write_result(tmp_path / "trk", SequenceResult("seq", boxes, np.full(3, 0.01), np.ones(3)))
    write_result(tmp_path / "trk", SequenceResult("seq", boxes * 2))
    back = read_result(tmp_path / "trk", "seq")
    assert back.times is None and back.scores is None
    np.testing.assert_array_equal(back.boxes, boxes * 2)


def test_nanotrack_runs_and_follows_the_target():
    seq = load_sequence(SOT_DIR / "Crossing")
    short = Sequence(seq.name, seq.frames[:30], seq.gt[:30])
    tracker = make_tracker(
        "nanotrack",
        nano_backbone=OPENCV_MODELS_DIR / "nanotrack_backbone_sim.onnx",
        nano_head=OPENCV_MODELS_DIR / "nanotrack_head_sim.onnx",
    )
    result = run_sequence(tracker, short)
    assert result.boxes.shape == (30, 4) and np.all(result.times > 0)
    np.testing.assert_array_equal(result.boxes[0], short.gt[0])
    assert np.all(np.abs(result.boxes[1:, :2] - short.gt[1:, :2]) < 20)  # stays on the pedestrian
    with pytest.raises(FileNotFoundError, match="NanoTrack needs its two ONNX files"):
        make_tracker("nanotrack", nano_backbone="missing.onnx", nano_head="missing.onnx")


def _cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "mixformer_ros.evaluation", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_has_help(command):
    proc = _cli(command, "--help")
    assert "usage:" in proc.stdout and command in proc.stdout


def test_cli_run_metrics_and_compare(tmp_path):
    results = tmp_path / "results"
    common = ("--data", SOT_DIR, "--sequences", "Crossing", "wakeboard10")
    run = _cli("run", "--tracker", "kcf", "--results", results, *common)
    assert "| kcf |" in run.stdout
    _cli("run", "--tracker", "csrt", "--results", results, "--name", "csrt_default", *common)
    assert (results / "kcf" / "Crossing.txt").exists()
    assert (results / "kcf" / "times" / "Crossing_time.txt").exists()

    metrics = _cli("metrics", results / "kcf", "--output-format", "csv", *common)
    assert metrics.stdout.startswith("sequence,scored frames,kcf AUC,kcf Prec@20")
    sequences = [load_sequence(SOT_DIR / "Crossing"), load_sequence(SOT_DIR / "wakeboard10")]
    ours = evaluate_tracker_dir(results / "kcf", sequences)
    assert f"{ours.overall['success_auc']:.3f}" in metrics.stdout

    out = tmp_path / "compare"
    _cli("compare", results / "kcf", results / "csrt_default", "--out", out, *common)
    for name in ("success_plot.png", "precision_plot.png", "per_sequence.md", "per_sequence.csv", "summary.md"):
        assert (out / name).stat().st_size > 0
    assert cv2.imread(str(out / "success_plot.png")) is not None
    assert "csrt_default" in (out / "summary.md").read_text()

    # Another toolkit's result set (no times) under the same folder name: told apart, strict JSON.
    other = tmp_path / "other" / "kcf"
    other.mkdir(parents=True)
    for name in ("Crossing.txt", "wakeboard10.txt"):
        (other / name).write_bytes((results / "kcf" / name).read_bytes())
    report = _cli("metrics", results / "kcf", other, "--output-format", "json", *common).stdout
    payload = json.loads(report, parse_constant=lambda token: pytest.fail(f"not JSON: {token}"))
    assert set(payload) == {"results/kcf", "other/kcf"}
    assert payload["other/kcf"]["overall"]["fps"] is None and payload["results/kcf"]["overall"]["fps"] > 0

    # A result cut short (a run killed while writing, by an older version) is run again, not reused.
    lines = (results / "kcf" / "Crossing.txt").read_text().splitlines(keepends=True)
    (results / "kcf" / "Crossing.txt").write_text("".join(lines[:50]))
    _cli("run", "--tracker", "kcf", "--results", results, *common)
    assert len((results / "kcf" / "Crossing.txt").read_text().splitlines()) == 120


def test_frame_step_shows_the_tracker_every_kth_frame_and_holds_the_box_between(tmp_path):
    seq = load_sequence(SOT_DIR / "Crossing")
    every = run_sequence(make_tracker("kcf"), seq)
    third = run_sequence(make_tracker("kcf"), seq, frame_step=3)
    assert third.boxes.shape == every.boxes.shape == (len(seq), 4)
    tracked = np.arange(len(seq)) % 3 == 0
    assert np.all(np.isfinite(third.times[tracked])) and np.all(np.isnan(third.times[~tracked]))
    assert np.all(np.isnan(third.scores[~tracked]))
    for i in np.flatnonzero(~tracked):
        np.testing.assert_array_equal(third.boxes[i], third.boxes[i - i % 3])
    assert not np.allclose(third.boxes[tracked], every.boxes[tracked])  # KCF saw bigger jumps
    write_result(tmp_path / "kcf3", third)
    ev = evaluate_tracker_dir(tmp_path / "kcf3", [seq])
    assert ev.overall["fps"] == pytest.approx((tracked.sum() - 1) / np.nansum(third.times[1:]))
    with pytest.raises(ValueError, match="frame_step must be >= 1"):
        run_sequence(make_tracker("kcf"), seq, frame_step=0)

    run = _cli("run", "--tracker", "kcf", "--results", tmp_path / "cli", "--data", SOT_DIR,
               "--sequences", "Crossing", "--frame-step", "3")
    assert "| kcf |" in run.stdout
    np.testing.assert_array_equal(read_result(tmp_path / "cli" / "kcf", "Crossing").boxes, third.boxes)
    # Results of another frame step in the same folder are refused, not passed off as this one's.
    proc = _cli("run", "--tracker", "kcf", "--results", tmp_path / "cli", "--data", SOT_DIR,
                "--sequences", "Crossing", check=False)
    assert proc.returncode == 1 and "was not run with frame step 1" in proc.stderr
    np.testing.assert_array_equal(read_result(tmp_path / "cli" / "kcf", "Crossing").boxes, third.boxes)


def test_cli_reports_bad_input_with_exit_code_1(tmp_path):
    proc = _cli("metrics", tmp_path / "no_results", "--data", SOT_DIR, "--sequences", "Crossing", check=False)
    assert proc.returncode == 1 and "no result for sequence 'Crossing'" in proc.stderr
    proc = _cli("run", "--tracker", "mixformer", "--data", SOT_DIR, "--results", tmp_path, check=False)
    assert proc.returncode == 1 and "mixformer needs --checkpoint" in proc.stderr
    proc = _cli("run", "--tracker", "mixformer", "--checkpoint", tmp_path / "missing.pth.tar",
                "--data", SOT_DIR, "--sequences", "Crossing", "--results", tmp_path, check=False)
    assert proc.returncode == 1 and "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("run", "--tracker", "kcf", "--name", "kcf/v2", "--data", SOT_DIR, "--sequences", "Crossing",
                "--results", tmp_path, check=False)
    assert proc.returncode == 1 and "must be a plain folder name" in proc.stderr
    proc = _cli("run", "--tracker", "foo", "--data", SOT_DIR, "--results", tmp_path, check=False)
    assert proc.returncode == 2
    proc = _cli("run", "--tracker", "kcf", "--frame-step", "0", "--data", SOT_DIR, "--results", tmp_path, check=False)
    assert proc.returncode == 2 and "must be a whole number > 0" in proc.stderr
    proc = _cli("run", "--tracker", "nanotrack", "--data", SOT_DIR, "--sequences", "Crossing", "--results", tmp_path,
                check=False)
    assert proc.returncode == 1 and "--nano-backbone and --nano-head" in proc.stderr
    proc = _cli("run", "--tracker", "mixformer", "--variant", "S", "--size-update-rate", "0", "--data", SOT_DIR,
                "--sequences", "Crossing", "--results", tmp_path, check=False)
    assert proc.returncode == 2 and "--size-update-rate: must be in (0, 1], got 0" in proc.stderr


def test_cli_runs_but_does_not_score_a_sequence_with_only_its_first_box(tmp_path):
    test_split = tmp_path / "GOT-10k_Test_000001"
    test_split.mkdir()
    crossing = load_sequence(SOT_DIR / "Crossing")
    for i in range(4):
        (test_split / f"{i + 1:08d}.jpg").write_bytes(crossing.frames[i].read_bytes())
    (test_split / "groundtruth.txt").write_text(",".join(map(str, crossing.gt[0])) + "\n")
    (test_split / "absence.label").write_text("0\n0\n0\n0\n")
    proc = _cli("run", "--tracker", "kcf", "--data", test_split, "--results", tmp_path / "res")
    assert "written but not scored" in proc.stderr and "| tracker |" not in proc.stdout
    assert read_result(tmp_path / "res" / "kcf", test_split.name).boxes.shape == (4, 4)
    proc = _cli("metrics", tmp_path / "res" / "kcf", "--data", test_split, check=False)
    assert proc.returncode == 1 and "no ground truth after the first frame" in proc.stderr


def test_cli_runs_mixformer_like_the_api(tmp_path):
    from parity import fixture_state_dict, write_fixture_checkpoint

    from mixformer_ros.evaluation.runners import MixFormerAdapter
    from mixformer_ros.tracking import build_tracker

    crossing = load_sequence(SOT_DIR / "Crossing")
    folder = tmp_path / "data" / "Crossing6"
    (folder / "img").mkdir(parents=True)
    for path in crossing.frames[:6]:
        (folder / "img" / path.name).write_bytes(path.read_bytes())
    rows = (",".join(str(int(v)) for v in row) + "\n" for row in crossing.gt[:6])
    (folder / "groundtruth_rect.txt").write_text("".join(rows))
    ckpt = tmp_path / "s.pth.tar"
    write_fixture_checkpoint("S", ckpt)

    _cli("run", "--tracker", "mixformer", "--variant", "S", "--checkpoint", ckpt, "--name", "mfS",
         "--data", tmp_path / "data", "--results", tmp_path / "results")
    from_cli = read_result(tmp_path / "results" / "mfS", "Crossing6")
    api = run_sequence(MixFormerAdapter(build_tracker(variant="S", state_dict=fixture_state_dict("S"))),
                       load_sequence(folder))
    np.testing.assert_array_equal(from_cli.boxes, api.boxes)
    np.testing.assert_array_equal(from_cli.scores[1:], api.scores[1:])
    _cli("run", "--tracker", "mixformer", "--variant", "S", "--checkpoint", ckpt, "--name", "mfS_damped",
         "--size-update-rate", "0.4", "--data", tmp_path / "data", "--results", tmp_path / "results")
    damped = run_sequence(MixFormerAdapter(build_tracker(variant="S", state_dict=fixture_state_dict("S"),
                                                         size_update_rate=0.4)), load_sequence(folder))
    np.testing.assert_array_equal(read_result(tmp_path / "results" / "mfS_damped", "Crossing6").boxes, damped.boxes)
    assert not np.array_equal(damped.boxes, api.boxes)
