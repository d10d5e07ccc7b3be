"""The tracker refuses bad images and boxes with clear errors and keeps its state."""
import numpy as np
import pytest

from parity import FIXTURE_SEARCH_FACTOR, fixture_state_dict, video_rgb
from paths import REPO_ROOT
from mixformer_ros.tracking import TrackerSettings, build_tracker, clip_box, preset_settings, sample_target
from mixformer_ros.model import variant_config

DEMO_MODEL = REPO_ROOT / "models" / "demo_tracker.pth.tar"


@pytest.fixture(scope="module")
def tracker():
    return build_tracker(variant="S", state_dict=fixture_state_dict("S"), preset="lasot")


def test_bad_boxes_leave_the_track_untouched(tracker):
    frames, box = video_rgb()
    tracker.initialize(frames[0], box)
    state = list(tracker.state)
    for bad in ([0, 0, 0, 10], [10, 10, -5, 5], [np.nan, 0, 10, 10], [1e9, 1e9, 10, 10], [-50, -50, 20, 20], [1, 2, 3]):
        with pytest.raises(ValueError):
            tracker.initialize(frames[1], bad)
        assert tracker.state == state and tracker.frame_index == 0


def test_bad_images_are_refused(tracker):
    frames, box = video_rgb()
    tracker.initialize(frames[0], box)
    for bad in (frames[1][..., 0], frames[1].astype(np.float32), np.zeros((0, 0, 3), np.uint8), frames[1][..., :2]):
        with pytest.raises(ValueError, match="image"):
            tracker.track(bad)
    assert tracker.frame_index == 0
    assert tracker.track(frames[1]).frame_index == 1


def test_track_before_initialize_is_an_error():
    trk = build_tracker(variant="S", state_dict=fixture_state_dict("S"))
    with pytest.raises(RuntimeError, match="before initialize"):
        trk.track(np.zeros((240, 320, 3), np.uint8))


def test_box_partly_outside_and_tiny_images_track():
    trk = build_tracker(variant="S", state_dict=fixture_state_dict("S"))
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    trk.initialize(image, [-5, -5, 20, 20])
    res = trk.track(image)
    x, y, w, h = res.box
    assert 0 <= x <= 30 and 0 <= y <= 40 and w >= 10 and h >= 10 and 0 <= res.score <= 1


def test_crops_with_nothing_in_them_and_a_changed_frame_size_are_refused_with_the_reason():
    trk = build_tracker(variant="S", state_dict=fixture_state_dict("S"))
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    # Only on the last column or row: the official one-pixel-smaller crop leaves nothing (was a cv2.error).
    for box in ([319.5, 239.5, 0.5, 0.5], [319.2, 0.0, 0.3, 0.3]):
        with pytest.raises(ValueError, match="leaves nothing to crop in the 320x240 image"):
            trk.initialize(image, box)
    with pytest.raises(ValueError, match="leaves nothing to crop in the 640x1 image"):
        trk.initialize(np.zeros((1, 640, 3), np.uint8), [0, 0, 640, 1])
    trk.initialize(image, [100, 80, 40, 30])
    state = list(trk.state)
    with pytest.raises(ValueError, match="frame size changed from 320x240 to 160x120 .* initialize"):
        trk.track(image[::2, ::2])
    assert trk.state == state and trk.frame_index == 0
    assert trk.track(image).frame_index == 1


def test_presets_and_overrides():
    s = variant_config("S")
    assert preset_settings("lasot", s).search_factor == FIXTURE_SEARCH_FACTOR["S"]
    assert preset_settings("got10k", variant_config("B")).update_interval == 10
    with pytest.raises(ValueError, match="unknown preset"):
        preset_settings("nope", s)
    with pytest.raises(ValueError, match="online_size"):
        TrackerSettings(search_factor=4.5, update_interval=10, online_size=3)
    for bad in ({"search_factor": float("inf")}, {"template_factor": 1e9}, {"search_factor": "4"}):
        with pytest.raises(ValueError, match="factor must be a number in"):
            TrackerSettings(**{"search_factor": 4.5, "update_interval": 10, **bad})
    for interval in (float("nan"), 2.5, True):
        with pytest.raises(ValueError, match="update_interval must be a whole number"):
            TrackerSettings(search_factor=4.5, update_interval=interval)
    with pytest.raises(ValueError, match="unknown tracker settings"):
        preset_settings("vot", s).replace(serch_factor=3)
    trk = build_tracker(variant="S", state_dict=fixture_state_dict("S"), preset="vot", search_factor=4.0)
    assert trk.settings.search_factor == 4.0 and trk.settings.update_interval == 10


def test_size_damping_keeps_the_networks_centre_and_moves_the_size_part_way():
    # The shipped demo model, started on a box too large for its target (the fixture video's square), so the
    # network shrinks it on the first frame (the fixture's random weights would throw the box off the image).
    frames, _ = video_rgb()
    box = [50.0, 30.0, 116.0, 84.0]
    official = build_tracker(checkpoint=DEMO_MODEL)
    damped = build_tracker(checkpoint=DEMO_MODEL, size_update_rate=0.4)
    assert official.settings.size_update_rate == 1.0  # off unless asked for: parity with the official tracker
    official.initialize(frames[0], box)
    damped.initialize(frames[0], box)
    raw, got = official.track(frames[1]), damped.track(frames[1])  # same crop, so the same network output
    assert got.score == raw.score
    x, y, w, h = raw.box
    assert box[2] - w > 5 and box[3] - h > 2, "the network must change the size for this check to mean anything"
    want_w, want_h = box[2] + 0.4 * (w - box[2]), box[3] + 0.4 * (h - box[3])
    np.testing.assert_allclose(got.box, [x + w / 2 - want_w / 2, y + h / 2 - want_h / 2, want_w, want_h], rtol=1e-6)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="size_update_rate"):
            preset_settings("lasot", variant_config("S")).replace(size_update_rate=bad)


def test_untrained_weights_warn_loudly(caplog):
    with caplog.at_level("WARNING"):
        build_tracker(variant="S")
    assert "UNTRAINED" in caplog.text


def test_geometry_padding_quirk_and_clip():
    image = np.full((20, 20, 3), 255, np.uint8)
    crop = sample_target(image, [15, 15, 5, 5], 2.0, 10)  # crop reaches past the bottom-right corner
    assert crop.image.shape == (10, 10, 3) and crop.resize_factor == 1.0
    # Crop origin round(12.5) = 12 (half to even), so the crop spans 12..21: image columns 12..18 and
    # three zero columns, the official extra pad dropping the last in-image column 19.
    assert crop.image[:7, :7].min() == 255 and crop.image[:, 7:].max() == 0 and crop.image[7:, :].max() == 0
    assert clip_box([-10, 5, 4, 4], 100, 100, margin=10) == [0, 5, 10, 10]
