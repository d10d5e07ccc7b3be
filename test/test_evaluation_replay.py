"""Live replay: a bag played into the real tracker node process over DDS, in lockstep and in real time.

ROS_DOMAIN_IDs 21-23 (evaluation range 20-39).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from parity import write_fixture_checkpoint
from paths import REPO_ROOT, SOT_DIR
from mixformer_ros.evaluation import (
    BagConfig,
    load_sequence,
    read_bag_info,
    read_result,
    run_bag,
    run_sequence,
    sequence_to_bag,
)
from mixformer_ros.evaluation.bags import through_detection
from mixformer_ros.evaluation.datasets import Sequence
from mixformer_ros.evaluation.runners import MixFormerAdapter
from mixformer_ros.tracking import build_tracker

FRAMES = 25


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "fixture_S.pth.tar"
    write_fixture_checkpoint("S", path)
    return path


@pytest.fixture(scope="module")
def woman():
    seq = load_sequence(SOT_DIR / "Woman")  # integer boxes: the init ROI equals the ground truth
    return Sequence(seq.name, seq.frames[:FRAMES], seq.gt[:FRAMES])


def _start_node(env, log_path, *params):
    args = [sys.executable, "-m", "mixformer_ros.tracker_node", "--ros-args", "-r", "__ns:=/eval"]
    for p in params:
        args += ["-p", p]
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while "active: listening" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"tracker node did not become active:\n{log_path.read_text()}")
        time.sleep(0.2)
    return proc


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _replay(env, bag, *args):
    cmd = [sys.executable, "-m", "mixformer_ros.evaluation", "replay", str(bag), "--node", "/eval/mixformer_tracker",
           "--timeout", "20", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)


def as_recorded(bag, out, image_delay_ns: int, info_delay_ns: int):
    """Copy ``bag`` with the bag times a recorder gives: each message's arrival, a little after its
    header stamp and different for a frame and its camera_info."""
    from rosbags.rosbag2 import Reader, Writer

    from mixformer_ros.evaluation.bags import INFO_MSG, make_typestore

    store = make_typestore()
    with Reader(bag) as reader, Writer(out, version=8) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        for conn, bag_time, raw in reader.messages():
            delay = info_delay_ns if conn.msgtype == INFO_MSG else image_delay_ns
            writer.write(conns[conn.id], bag_time + delay, raw)
    return out


def _tracker(checkpoint):
    return MixFormerAdapter(build_tracker(variant="S", checkpoint=checkpoint))


# The JPEG bag carries a recorder's bag times (frames are still joined by header stamp).
@pytest.mark.parametrize(("image_format", "domain"), [("raw", 21), ("jpeg", 22)])
def test_lockstep_reproduces_offline_boxes_and_realtime_reports_latency(
    checkpoint, woman, tmp_path, ros_env, image_format, domain
):
    bag = sequence_to_bag(woman, tmp_path / "bag", BagConfig(image_format=image_format, fps=10.0), progress=False)
    if image_format == "jpeg":
        bag = as_recorded(bag, tmp_path / "recorded", image_delay_ns=7_000_000, info_delay_ns=9_000_000)
    env = ros_env(domain)
    params = [f"checkpoint:={checkpoint}", "variant:=S"]
    if image_format == "jpeg":
        params.append("compressed:=true")
    node = _start_node(env, tmp_path / "node.log", *params)
    try:
        lock = _replay(env, bag, "--mode", "lockstep", "--results", tmp_path / "res", "--name", "lockstep")
        assert lock.returncode == 0, lock.stderr + (tmp_path / "node.log").read_text()
        # Real time at 5x the recorded rate: the CPU node cannot keep up, so some frames are skipped.
        live = _replay(env, bag, "--mode", "realtime", "--rate", "5", "--clock", "--json", tmp_path / "rt.json")
        assert live.returncode == 0, live.stderr
    finally:
        _stop(node)

    # Lockstep live boxes = offline boxes from the bag = boxes from the sequence folder.
    recorded = read_result(tmp_path / "res" / "lockstep", "Woman")
    from_bag = run_bag(_tracker(checkpoint), read_bag_info(bag))
    from_folder = run_sequence(_tracker(checkpoint), woman)
    np.testing.assert_array_equal(from_bag.boxes, from_folder.boxes)
    np.testing.assert_array_equal(recorded.boxes, through_detection(from_folder.boxes))
    assert "without detection 0" in lock.stdout

    report = json.loads((tmp_path / "rt.json").read_text())
    assert report["frames"] == FRAMES - 1
    assert report["detections"] + report["dropped"] == report["frames"]
    assert report["detections"] >= 1
    lat = report["latency_ms"]
    assert lat["count"] == report["detections"] and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert report["node_latency_ms"]["count"] >= 1 and report["throughput_fps"] > 0
    assert 0.0 <= report["accuracy"]["success_auc"] <= 1.0
    assert "end-to-end latency p50/p90/p99 ms" in live.stdout


def test_realtime_scores_each_frame_with_the_box_back_before_the_next_frame():
    """The VOT real-time rule on a scripted record: frames published every 100 ms; frame 2's box
    comes back 250 ms late, frame 3 is skipped, frame 4's box is late and overtaken by frame 5's."""
    from mixformer_ros.evaluation.bags import BagInfo
    from mixformer_ros.ros.replay import ReplayRecord, build_report

    gt = np.array([[10.0 * i, 5.0, 20.0, 20.0] for i in range(6)])
    info = BagInfo(REPO_ROOT, "scripted", "/image", "sensor_msgs/msg/Image", "/gt",
                   np.arange(6, dtype=np.int64) * 10**8 + 10**9, gt, np.zeros(6, bool))
    stamp = [int(s) for s in info.stamps_ns]
    answered_after_s = {1: 0.05, 2: 0.25, 4: 0.18, 5: 0.06}
    expected = {
        "realtime": ([0, 1, 1, 1, 2, 5], [np.nan, 0.9, np.nan, np.nan, np.nan, 0.9], 2),
        "lockstep": ([0, 1, 2, 2, 4, 5], [np.nan, 0.9, 0.9, np.nan, 0.9, 0.9], 0),
    }
    for mode, (box_of_frame, scores, late) in expected.items():
        record = ReplayRecord(init_box=gt[0], mode=mode, track_id="t")
        record.started_at = 1.0
        for i in range(6):
            record.published_at[stamp[i]] = 1.0 + 0.1 * i
        for i, delay in answered_after_s.items():
            record.detections[stamp[i]] = (gt[i], 0.9, 1.0 + 0.1 * i + delay)
        report = build_report(info, record, "live")
        np.testing.assert_array_equal(report.result.boxes, gt[box_of_frame], err_msg=mode)
        np.testing.assert_array_equal(report.result.scores, scores, err_msg=mode)
        assert (report.detections, report.dropped, report.late) == (4, 1, late), mode
        as_json = json.loads(json.dumps(report.as_dict(), allow_nan=False))  # strict JSON: no NaN
        assert as_json["accuracy"]["fps"] is None and as_json["late"] == late


@pytest.mark.parametrize("info_first", [True, False], ids=["info_before_image", "info_after_image"])
def test_each_camera_info_goes_out_with_its_image(woman, tmp_path, info_first):
    from mixformer_ros.evaluation.bags import INFO_MSG, header_stamp_ns, iter_bag_messages, make_typestore
    from mixformer_ros.ros.replay import _frames

    bag = sequence_to_bag(Sequence(woman.name, woman.frames[:5], woman.gt[:5]), tmp_path / "bag", progress=False)
    image_delay, info_delay = (9_000_000, 7_000_000) if info_first else (7_000_000, 9_000_000)
    bag = as_recorded(bag, tmp_path / "recorded", image_delay_ns=image_delay, info_delay_ns=info_delay)
    info = read_bag_info(bag)
    frames = list(_frames(iter_bag_messages(bag, [info.image_topic, "/camera/camera_info"]), info))
    store = make_typestore()
    assert [f.stamp_ns for f in frames] == info.stamps_ns.tolist()
    for frame in frames:
        assert [header_stamp_ns(store, raw, INFO_MSG) for raw in frame.infos] == [frame.stamp_ns]


def test_replay_without_a_node_says_so(woman, tmp_path, ros_env):
    bag = sequence_to_bag(
        Sequence(woman.name, woman.frames[:3], woman.gt[:3]), tmp_path / "bag", BagConfig(), progress=False
    )
    proc = _replay(ros_env(23), bag, "--timeout", "2")
    assert proc.returncode == 1
    assert "timed out after 2.0 s waiting for the tracker node to subscribe to /eval/image" in proc.stderr
