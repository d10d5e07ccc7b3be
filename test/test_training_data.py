"""Training data: readers on each dataset layout, the pair sampler, crops, and unreadable frames."""
from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from mixformer_ros.tracking.geometry import map_box_back, sample_target
from mixformer_ros.training.data import (COCOReader, CropConfig, DataPathError, FrameReadError, GOT10kReader,
                                         LaSOTReader, OTBReader, PairDataset, PairSampler, SamplerConfig,
                                         SyntheticConfig, SyntheticDataset, TrackingNetReader)
from mixformer_ros.training.data.processing import box_in_crop, jitter_box
from paths import SOT_DIR

SMALL_SYNTH = SyntheticConfig(num_sequences=6, num_frames=20, frame_size=(120, 96), min_object_size=12,
                              max_object_size=30, seed=11)


def _write_frames(folder, n, ext=".jpg", name=lambda i: f"{i + 1:08d}"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{name(i)}{ext}"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def _boxes(n):
    return "\n".join(f"{10 + i},{8 + i},20,16" for i in range(n)) + "\n"


def test_synthetic_sequences_are_deterministic_and_annotated():
    a, b = SyntheticDataset(SMALL_SYNTH), SyntheticDataset(SMALL_SYNTH)
    seq = a[2]
    assert np.array_equal(seq.frame(7), b[2].frame(7)) and np.array_equal(seq.boxes, b[2].boxes)
    assert seq.frame(0).shape == (96, 120, 3) and seq.frame(0).dtype == np.uint8
    assert seq.boxes.shape == (20, 4) and (seq.boxes[:, 2:] > 0).all() and seq.visible.dtype == bool
    assert not np.array_equal(a[0].frame(0), a[1].frame(0))
    # A spawned data worker gets the dataset without the sequences built so far and draws the same ones.
    copy = pickle.loads(pickle.dumps(a))
    assert len(pickle.dumps(a)) < 10_000 and np.array_equal(copy[2].frame(7), seq.frame(7))


def test_synthetic_textures_from_photos(tmp_path):
    _write_frames(tmp_path / "img", 3)
    cfg = SyntheticConfig(**{**SMALL_SYNTH.__dict__, "texture_dirs": (str(tmp_path / "img"),)})
    photo, plain = SyntheticDataset(cfg), SyntheticDataset(SMALL_SYNTH)
    assert np.array_equal(photo[1].frame(3), SyntheticDataset(cfg)[1].frame(3))  # still determined by the seed
    assert any(not np.array_equal(photo[i].frame(0), plain[i].frame(0)) for i in range(len(plain)))
    assert photo[0].frame(0).shape == plain[0].frame(0).shape
    with pytest.raises(ValueError, match="no .jpg"):
        SyntheticDataset(SyntheticConfig(texture_dirs=(str(tmp_path),)))


def test_readers_parse_each_layout(tmp_path):
    got = tmp_path / "got10k" / "train"
    for name in ("GOT-10k_Train_000001", "GOT-10k_Train_000002"):
        _write_frames(got / name, 5)
        (got / name / "groundtruth.txt").write_text(_boxes(5))
        (got / name / "absence.label").write_text("0\n0\n1\n0\n0\n")
        (got / name / "cover.label").write_text("8\n8\n0\n8\n8\n")
    (got / "list.txt").write_text("GOT-10k_Train_000001\nGOT-10k_Train_000002\n")
    g = GOT10kReader(tmp_path / "got10k")
    assert len(g) == 2 and g[0].visible.tolist() == [True, True, False, True, True]
    assert g[1].frame(4).shape == (48, 64, 3)

    lasot = tmp_path / "lasot" / "cat" / "cat-1"
    _write_frames(lasot / "img", 4)
    (lasot / "groundtruth.txt").write_text(_boxes(4))
    (lasot / "full_occlusion.txt").write_text("0,1,0,0")
    (lasot / "out_of_view.txt").write_text("0,0,0,1")
    la = LaSOTReader(tmp_path / "lasot")
    seq = la[0]
    assert seq.visible.tolist() == [True, False, True, False] and seq.boxes[2].tolist() == [12, 10, 20, 16]

    tn = tmp_path / "trackingnet" / "TRAIN_0"
    _write_frames(tn / "frames" / "vid_a", 3, name=str)
    (tn / "anno").mkdir()
    (tn / "anno" / "vid_a.txt").write_text(_boxes(3))
    tn = TrackingNetReader(tmp_path / "trackingnet", chunks=[0])
    seq = tn[0]
    assert len(seq) == 3 and seq.frame(2).shape == (48, 64, 3)

    coco = tmp_path / "coco"
    _write_frames(coco / "train2017", 1, name=lambda i: "000000000001")
    (coco / "annotations").mkdir()
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000000000001.jpg"}],
        "annotations": [{"id": 5, "image_id": 1, "bbox": [4, 4, 30, 30], "area": 900, "iscrowd": 0},
                        {"id": 6, "image_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
                        # a segmentation's area with a degenerate box: no usable target
                        {"id": 7, "image_id": 1, "bbox": [10, 10, 0, 25], "area": 500, "iscrowd": 0}]}))
    c = COCOReader(coco)
    assert len(c) == 1 and len(c[0]) == 1 and c[0].frame(0).shape == (48, 64, 3)

    otb = OTBReader(SOT_DIR, ["Crossing"])
    assert len(otb) == 1 and len(otb[0]) == 120 and otb[0].frame(0).shape == (240, 360, 3)

    # Spawned data workers get the readers pickled, sequence caches and all.
    for reader in (g, la, tn, c, otb):
        copy = pickle.loads(pickle.dumps(reader))
        assert len(copy) == len(reader) and copy[0].name == reader[0].name
        assert np.array_equal(copy[0].boxes, reader[0].boxes) and np.array_equal(copy[0].frame(0), reader[0].frame(0))

    with pytest.raises(DataPathError, match="does not exist"):
        OTBReader(tmp_path / "nope")
    with pytest.raises(DataPathError, match="not found"):
        OTBReader(SOT_DIR, ["NoSuchSequence"])


def test_sampler_respects_gap_order_and_visibility():
    ds = SyntheticDataset(SMALL_SYNTH)
    sampler = PairSampler([ds], cfg=SamplerConfig(num_template_frames=2, max_gap=5))
    rng = np.random.default_rng(0)
    for _ in range(50):
        pair = sampler.sample(rng)
        t0, t1 = pair.templates
        s = pair.search
        assert t0.sequence is s.sequence and pair.positive
        assert t1.index <= t0.index < s.index <= t0.index + 5 and t0.index - t1.index <= 5
        assert all(ref.sequence.visible[ref.index] for ref in (t0, t1, s))


def test_negatives_come_from_another_sequence():
    two = SyntheticDataset(SyntheticConfig(num_sequences=2, num_frames=12, frame_size=(96, 80), seed=5))
    sampler = PairSampler([two], cfg=SamplerConfig(negative_probability=1.0, max_gap=5))
    rng = np.random.default_rng(0)
    for _ in range(30):
        pair = sampler.sample(rng)
        assert not pair.positive and pair.search.sequence.name != pair.templates[0].sequence.name
    one = SyntheticDataset(SyntheticConfig(num_sequences=1, num_frames=12, frame_size=(96, 80), seed=5))
    with pytest.raises(ValueError, match="at least two sequences"):
        PairSampler([one], cfg=SamplerConfig(negative_probability=0.5))


def test_gray_pairs_stay_gray_under_the_brightness_jitter():
    sampler = PairSampler([SyntheticDataset(SMALL_SYNTH)], cfg=SamplerConfig(max_gap=6))
    data = PairDataset(sampler, CropConfig(template_size=32, search_size=64, grayscale_probability=1.0),
                       samples_per_epoch=8)
    for i in range(8):
        sample = data[i]
        for crop in ("template", "online_template", "search"):
            channels = sample[crop]  # (3, H, W) uint8
            assert torch.equal(channels[0], channels[1]) and torch.equal(channels[1], channels[2]), crop


def test_crop_target_box_inverts_the_trackers_map_back():
    image = np.zeros((200, 300, 3), np.uint8)
    rng = np.random.default_rng(1)
    for _ in range(20):
        box = np.array([rng.uniform(20, 200), rng.uniform(20, 120), rng.uniform(10, 60), rng.uniform(10, 60)], np.float32)
        centre = jitter_box(box, 0.25, 2.0, rng)
        crop = sample_target(image, centre, 4.5, 128)
        norm = box_in_crop(box, centre, crop.resize_factor, 128)
        px = norm * 128 / crop.resize_factor  # cx, cy, w, h in frame pixels relative to the crop
        back = map_box_back(px.tolist(), centre.tolist(), 128, crop.resize_factor)
        assert np.allclose(back, box, atol=1e-3)


def test_otb_frames_are_paired_with_their_boxes(tmp_path):
    root = tmp_path / "otb"
    # One box per file, numbered with gaps: paired in number order (9 before 10).
    _write_frames(root / "Sparse" / "img", 4, name=lambda i: str(5 * i + 4))
    # The first file is missing: row 0 still labels frame 1, so the others keep their boxes.
    _write_frames(root / "NoFirst" / "img", 5, name=lambda i: f"{i + 1:04d}")
    (root / "NoFirst" / "img" / "0001.jpg").unlink()
    # Names without numbers and a box count that differs: nothing to pair by.
    _write_frames(root / "Named" / "img", 3, name=lambda i: f"frame_{'abc'[i]}")
    for name, rows in (("Sparse", 4), ("NoFirst", 5), ("Named", 4)):
        (root / name / "groundtruth_rect.txt").write_text(_boxes(rows))
    reader = OTBReader(root, ["Named", "NoFirst", "Sparse"])
    named, no_first, sparse = (reader[i] for i in range(3))
    assert [p.name for p in sparse._frames] == ["4.jpg", "9.jpg", "14.jpg", "19.jpg"]
    assert len(no_first) == 5
    assert [p.name for p in no_first._frames][1:] == ["0002.jpg", "0003.jpg", "0004.jpg", "0005.jpg"]
    with pytest.raises(FrameReadError):
        no_first.frame(0)
    assert len(named) == 0  # left out with a warning; the sampler skips it
    sampler = PairSampler([reader], cfg=SamplerConfig(max_gap=4))
    assert all(sampler.sample(np.random.default_rng(i)).search.sequence.name != "Named" for i in range(20))


def test_otb100_special_folders_train_as_the_benchmark_defines_them(tmp_path):
    root = tmp_path / "otb"
    _write_frames(root / "Jogging" / "img", 3, name=lambda i: f"{i + 1:04d}")
    for target in (1, 2):
        (root / "Jogging" / f"groundtruth_rect.{target}.txt").write_text(_boxes(3))
    (root / "David" / "img").mkdir(parents=True)
    for i in range(770):  # OTB-100's David: 770 images, boxes for frames 300-770
        (root / "David" / "img" / f"{i + 1:04d}.jpg").touch()
    (root / "David" / "groundtruth_rect.txt").write_text(_boxes(471))
    reader = OTBReader(root)
    assert reader.sequence_names == ["David", "Jogging-1", "Jogging-2"]
    david = reader[0]
    assert len(david) == 471 and [david._frames[0].name, david._frames[-1].name] == ["0300.jpg", "0770.jpg"]
    (jogging_2,) = (OTBReader(root, ["Jogging-2"])[0],)
    assert jogging_2.name == "Jogging-2" and len(jogging_2) == 3


def test_a_sequence_with_unreadable_annotations_is_left_out_not_fatal(tmp_path, caplog):
    split = tmp_path / "got10k" / "train"
    for name, gt in (("good", _boxes(4)), ("three_values", "1,2,3\n")):
        _write_frames(split / name, 4)
        (split / name / "groundtruth.txt").write_text(gt)
    (split / "list.txt").write_text("good\nthree_values\nnot_downloaded\n")
    reader = GOT10kReader(tmp_path / "got10k")
    with caplog.at_level("WARNING"):
        assert [len(reader[i]) for i in range(3)] == [4, 0, 0]
    assert "three_values left out" in caplog.text and "not_downloaded left out (2 so far)" in caplog.text
    sampler = PairSampler([reader], cfg=SamplerConfig(max_gap=4))
    assert sampler.sample(np.random.default_rng(0)).search.sequence.name == "good"
    nothing_usable = PairSampler([GOT10kReader(tmp_path / "got10k", names=["three_values"])], cfg=SamplerConfig())
    with pytest.raises(DataPathError, match="no valid pair"):
        nothing_usable.sample(np.random.default_rng(0))


def test_unreadable_frames_are_skipped_and_counted(tmp_path):
    seq_dir = tmp_path / "otb" / "Broken"
    _write_frames(seq_dir / "img", 6, name=lambda i: f"{i + 1:04d}")
    (seq_dir / "img" / "0003.jpg").write_bytes(b"not a jpeg")
    (seq_dir / "img" / "0005.jpg").unlink()
    (seq_dir / "groundtruth_rect.txt").write_text(_boxes(6))
    seq = OTBReader(tmp_path / "otb")[0]
    # The missing frame keeps its place, so the labels after it stay on their own frames.
    assert len(seq) == 6
    for missing_or_corrupt in (2, 4):
        with pytest.raises(FrameReadError):
            seq.frame(missing_or_corrupt)
    sixth = cv2.cvtColor(cv2.imread(str(seq_dir / "img" / "0006.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(seq.frame(5), sixth)
    np.testing.assert_array_equal(seq.boxes[5], [15, 13, 20, 16])

    sampler = PairSampler([OTBReader(tmp_path / "otb")], cfg=SamplerConfig(max_gap=6))
    data = PairDataset(sampler, CropConfig(template_size=32, search_size=64), samples_per_epoch=40)
    samples = [data[i] for i in range(40)]
    assert sum(int(s["skipped"]) for s in samples) > 0
    assert all(s["search"].shape == (3, 64, 64) for s in samples)


def test_a_truncated_jpeg_is_an_unreadable_frame(tmp_path):
    """A JPEG cut short (a copy that ran out of disk) decodes in OpenCV with its missing rows grey;
    training on it would teach the wrong pixels, so it counts as unreadable."""
    seq_dir = tmp_path / "otb" / "Cut"
    _write_frames(seq_dir / "img", 2, name=lambda i: f"{i + 1:04d}")
    (seq_dir / "groundtruth_rect.txt").write_text(_boxes(2))
    seq = OTBReader(tmp_path / "otb")[0]
    rng = np.random.default_rng(1)
    for progressive in (0, 1):  # a progressive JPEG has several scans; a whole file ends after its last
        whole = cv2.imencode(".jpg", rng.integers(0, 255, (80, 96, 3), dtype=np.uint8),
                             [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])[1].tobytes()
        (seq_dir / "img" / "0001.jpg").write_bytes(whole)
        assert seq.frame(0).shape == (80, 96, 3)
        (seq_dir / "img" / "0001.jpg").write_bytes(whole[: len(whole) * 2 // 3])
        assert cv2.imread(str(seq_dir / "img" / "0001.jpg")) is not None
        with pytest.raises(FrameReadError, match="truncated JPEG"):
            seq.frame(0)
    assert seq.frame(1).shape[2] == 3
