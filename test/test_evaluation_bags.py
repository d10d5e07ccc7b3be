"""Sequences and videos to rosbag2 and back; offline bag evaluation equals folder evaluation."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from rclpy.serialization import deserialize_message
from vision_msgs.msg import Detection2D

from parity import fixture_state_dict
from paths import REPO_ROOT, SOT_DIR
from mixformer_ros.evaluation import (
    BagConfig,
    load_sequence,
    make_tracker,
    read_bag_info,
    run_bag,
    run_sequence,
    sequence_to_bag,
    video_to_bag,
)
from mixformer_ros.evaluation.bags import detection_to_box, iter_bag_frames, iter_bag_messages, through_detection
from mixformer_ros.evaluation.datasets import Sequence
from mixformer_ros.evaluation.report import score_result
from mixformer_ros.evaluation.runners import MixFormerAdapter
from mixformer_ros.tracking import build_tracker

VENV_SHARE = REPO_ROOT / ".venv" / "share"


def _short(name: str, n: int) -> Sequence:
    seq = load_sequence(SOT_DIR / name)
    return Sequence(seq.name, seq.frames[:n], seq.gt[:n])


@pytest.fixture(scope="module")
def crossing():
    return _short("Crossing", 40)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("image_format", ["raw", "jpeg"])
def test_round_trip_is_lossless(crossing, tmp_path, storage, image_format):
    config = BagConfig(storage=storage, image_format=image_format, fps=25.0)
    out = sequence_to_bag(crossing, tmp_path / "bag", config, progress=False)
    info = read_bag_info(out)
    assert info.image_topic == ("/camera/image_raw/compressed" if image_format == "jpeg" else "/camera/image_raw")
    assert info.gt_topic == "/ground_truth" and info.name == "Crossing" and len(info) == 40
    assert info.fps == pytest.approx(25.0, rel=1e-6)
    np.testing.assert_array_equal(info.stamps_ns, [config.stamp_ns(i) for i in range(40)])
    np.testing.assert_array_equal(info.gt, crossing.gt)  # integer boxes survive the centre form exactly
    for i, (stamp, bgr) in enumerate(iter_bag_frames(info)):
        assert stamp == info.stamps_ns[i]
        np.testing.assert_array_equal(bgr, crossing.read_frame(i))  # bit-equal pixels
    if image_format == "jpeg":  # stored byte for byte
        first = next(iter_bag_messages(out, [info.image_topic]))
        assert crossing.frames[0].read_bytes() in first[3]


def test_bag_is_readable_by_ros(crossing, tmp_path):
    """Types and hashes match the real interface packages, so `ros2 bag play` accepts the bag."""
    out = sequence_to_bag(crossing, tmp_path / "bag", BagConfig(), progress=False)
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in meta["topics_with_message_count"]}
    for topic, pkg_type in [("/ground_truth", "vision_msgs/msg/Detection2D"),
                            ("/camera/image_raw", "sensor_msgs/msg/Image"),
                            ("/camera/camera_info", "sensor_msgs/msg/CameraInfo")]:
        installed = json.loads((VENV_SHARE / (pkg_type.replace("/msg/", "/msg/") + ".json")).read_text())
        assert topics[topic]["type"] == pkg_type
        assert topics[topic]["type_description_hash"] == installed["type_hashes"][0]["hash_string"]
    # rclpy decodes the recorded bytes with the generated vision_msgs class
    _, _, stamp, raw = next(iter_bag_messages(out, ["/ground_truth"]))
    det = deserialize_message(raw, Detection2D)
    assert det.header.stamp.sec * 10**9 + det.header.stamp.nanosec == stamp
    np.testing.assert_array_equal(detection_to_box(det), crossing.gt[0])
    assert det.results[0].hypothesis.score == 1.0 and det.id == "Crossing"


def test_absent_frames_get_no_ground_truth(crossing, tmp_path):
    absent = np.zeros(len(crossing), bool)
    absent[5] = True
    gt = crossing.gt.copy()
    gt[7] = np.nan
    seq = Sequence("holes", crossing.frames, gt, absent)
    info = read_bag_info(sequence_to_bag(seq, tmp_path / "bag", BagConfig(storage="sqlite3"), progress=False))
    assert info.absent.nonzero()[0].tolist() == [5, 7]
    assert np.isnan(info.gt[[5, 7]]).all()


def test_float_ground_truth_round_trips_to_the_last_bit_of_the_centre_form(tmp_path):
    seq = _short("bag", 10)  # VOT-derived, 3 decimals
    info = read_bag_info(sequence_to_bag(seq, tmp_path / "bag", BagConfig(), progress=False))
    np.testing.assert_array_equal(info.gt, through_detection(seq.gt))
    np.testing.assert_allclose(info.gt, seq.gt, rtol=0, atol=1e-9)


def test_offline_bag_evaluation_equals_the_folder(crossing, tmp_path):
    for image_format in ("raw", "jpeg"):
        bag = sequence_to_bag(crossing, tmp_path / image_format, BagConfig(image_format=image_format), progress=False)
        info = read_bag_info(bag)
        from_bag = run_bag(make_tracker("csrt"), info)
        from_folder = run_sequence(make_tracker("csrt"), crossing)
        np.testing.assert_array_equal(from_bag.boxes, from_folder.boxes)
        assert score_result(from_bag, info)["success_auc"] == score_result(from_folder, crossing)["success_auc"]


def test_offline_bag_evaluation_equals_the_folder_with_mixformer(tmp_path):
    seq = _short("Woman", 12)
    info = read_bag_info(sequence_to_bag(seq, tmp_path / "bag", BagConfig(), progress=False))

    def tracker():
        return MixFormerAdapter(build_tracker(variant="S", state_dict=fixture_state_dict("S")))

    from_bag = run_bag(tracker(), info)
    from_folder = run_sequence(tracker(), seq)
    np.testing.assert_array_equal(from_bag.boxes, from_folder.boxes)
    np.testing.assert_array_equal(from_bag.scores, from_folder.scores)
    assert np.all(np.isfinite(from_bag.boxes))


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "mixformer_ros.evaluation", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_to_bag_and_eval_bag_match_run(tmp_path):
    _cli("to-bag", SOT_DIR / "wakeboard10", tmp_path / "wb.bag", "--storage", "sqlite3", "--image-format", "jpeg",
         "--fps", "10")
    info = read_bag_info(tmp_path / "wb.bag")
    assert len(info) == 157 and info.fps == pytest.approx(10.0)
    out = _cli("eval-bag", tmp_path / "wb.bag", "--tracker", "kcf", "--results", tmp_path / "bag_results")
    _cli("run", "--tracker", "kcf", "--data", SOT_DIR, "--sequences", "wakeboard10", "--results", tmp_path / "folder")
    bag_boxes = np.loadtxt(tmp_path / "bag_results" / "kcf" / "wakeboard10.txt", delimiter=",")
    folder_boxes = np.loadtxt(tmp_path / "folder" / "kcf" / "wakeboard10.txt", delimiter=",")
    np.testing.assert_array_equal(bag_boxes, folder_boxes)
    assert "| wakeboard10 | 157 |" in out.stdout

    again = _cli("to-bag", SOT_DIR / "wakeboard10", tmp_path / "wb.bag", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    missing = _cli("eval-bag", tmp_path / "nope", "--tracker", "kcf", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    not_a_bag = _cli("eval-bag", SOT_DIR / "wakeboard10", "--tracker", "kcf", check=False)
    assert not_a_bag.returncode == 1 and "not a rosbag2 folder: it has no metadata.yaml" in not_a_bag.stderr
    bad_name = _cli("eval-bag", tmp_path / "wb.bag", "--tracker", "kcf", "--name", "..", check=False)
    assert bad_name.returncode == 1 and "must be a plain folder name" in bad_name.stderr


def test_to_bag_refuses_arguments_it_cannot_honour(tmp_path):
    for option, value, reason in (("--fps", "inf", "must be a finite number > 0"),
                                  ("--start-time", "3e9", "must be in (0, 2^31) seconds"),
                                  ("--start-time", "0", "must be in (0, 2^31) seconds")):
        proc = _cli("to-bag", SOT_DIR / "Crossing", tmp_path / "out", option, value, check=False)
        assert proc.returncode == 2 and reason in proc.stderr, (option, value, proc.stderr)
    proc = _cli("to-bag", SOT_DIR / "Crossing", tmp_path / "out", "--gt", SOT_DIR / "Crossing" / "groundtruth_rect.txt",
                check=False)
    assert proc.returncode == 1 and "--gt is for a video" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_bag_that_fails_part_way_is_removed(crossing, tmp_path):
    from mixformer_ros.evaluation.bags import BagFrame, write_bag

    def frames():
        yield BagFrame(bgr=crossing.read_frame(0))
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="camera unplugged"):
        write_bag(tmp_path / "partial", frames(), crossing.gt[:2], progress=False)
    assert not (tmp_path / "partial").exists()  # a rerun to the same path is not blocked


def test_a_bag_without_frames_is_refused_with_a_reason(tmp_path):
    from rosbags.rosbag2 import Writer

    from mixformer_ros.evaluation.bags import DETECTION_MSG, IMAGE_MSG, make_typestore

    store = make_typestore()
    with Writer(tmp_path / "empty", version=8) as writer:  # topics announced, nothing recorded
        writer.add_connection("/camera/image_raw", IMAGE_MSG, typestore=store)
        writer.add_connection("/ground_truth", DETECTION_MSG, typestore=store)
    with pytest.raises(ValueError, match="no frames on /camera/image_raw"):
        read_bag_info(tmp_path / "empty")
    proc = _cli("eval-bag", tmp_path / "empty", "--tracker", "kcf", check=False)
    assert proc.returncode == 1 and "no frames on /camera/image_raw" in proc.stderr


def test_video_to_bag(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (64, 48))
    for i in range(9):
        frame = np.zeros((48, 64, 3), np.uint8)
        cv2.rectangle(frame, (5 + i, 10), (25 + i, 30), (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{5 + i},10,21,21\n" for i in range(9)))
    _cli("to-bag", video, tmp_path / "clip_bag", "--gt", gt)
    info = read_bag_info(tmp_path / "clip_bag")
    assert len(info) == 9 and info.fps == pytest.approx(15.0)  # the video's own rate
    np.testing.assert_array_equal(info.gt[3], [8, 10, 21, 21])
    # a VOT-style polygon file gives the polygons' axis-aligned boxes
    gt.write_text("".join(f"{5 + i},10,{26 + i},10,{26 + i},31,{5 + i},31\n" for i in range(9)))
    info = read_bag_info(video_to_bag(video, tmp_path / "poly_bag", gt_file=gt, progress=False))
    np.testing.assert_array_equal(info.gt[3], [8, 10, 21, 21])
    assert _cli("to-bag", video, tmp_path / "fps0", "--fps", "0", check=False).returncode == 2
    # the API converts a video without ground truth as well
    info = read_bag_info(video_to_bag(video, tmp_path / "no_gt", BagConfig(image_format="jpeg"), progress=False))
    assert len(info) == 9 and info.gt_topic is None and info.absent.all()


def test_bag_topic_choices_are_checked(crossing, tmp_path):
    bag = sequence_to_bag(Sequence("c", crossing.frames[:3], crossing.gt[:3]), tmp_path / "bag", progress=False)
    with pytest.raises(ValueError, match="no camera topic .* named /nope"):
        read_bag_info(bag, image_topic="/nope")
    with pytest.raises(ValueError, match="no ground truth topic .* named /nope"):
        read_bag_info(bag, gt_topic="/nope")
    with pytest.raises(ValueError, match="must be one of"):
        BagConfig(storage="rosbag1")
    for fps in (0, float("inf"), 1e7):
        with pytest.raises(ValueError, match="fps must be in"):
            BagConfig(fps=fps)
    with pytest.raises(ValueError, match="below 2\\^31 s"):
        BagConfig(start_time_ns=3 * 10**18)
