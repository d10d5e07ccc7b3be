"""The online tracker reproduces the official MixFormerOnline runs of the parity fixture."""
import numpy as np
import pytest

import mixformer_ros.tracking.tracker as tracker_module
from parity import FIXTURE_SEARCH_FACTOR, fixture_state_dict, load_npz, video_rgb
from mixformer_ros.backends.torch_backend import TorchBackend
from mixformer_ros.model import build_mixformerv2
from mixformer_ros.tracking import MixFormerTracker, TrackerSettings, build_tracker
from mixformer_ros.tracking.preprocessing import normalize_crops


class RecordingBackend:
    """Wraps a real backend and records what the network receives, for the fixture's input statistics."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.templates = None
        self.calls = []  # (template, online_template, search) per predict

    def set_templates(self, template, online_template):
        self.templates = (template, online_template)
        self.inner.set_templates(template, online_template)

    def predict(self, search):
        self.calls.append((*self.templates, search))
        return self.inner.predict(search)


class ScriptedBackend:
    """Returns the fixture's scripted network outputs in call order (the fixture's `scripted` run)."""

    name, device = "scripted", "cpu"

    def __init__(self, boxes, logits):
        self.outputs = list(zip(boxes, logits))

    def set_templates(self, template, online_template):
        pass

    def predict(self, search):
        box, logit = self.outputs.pop(0)
        return np.asarray(box, dtype=np.float32), float(logit)


def channel_stats(crop):
    x = normalize_crops(crop)[0].astype(np.float64)  # (3, H, W)
    return x.mean(axis=(1, 2)), x.reshape(3, -1).std(axis=1, ddof=1)


def run_fixture(variant, run, monkeypatch):
    ref = load_npz(f"tracker_{variant}.npz")
    net = build_mixformerv2(variant)
    crops = []
    current_frame = [0]

    def spying_sample_target(image, box, factor, output_size):
        crop = real_sample_target(image, box, factor, output_size)
        crops.append([current_frame[0], output_size, *crop.image.reshape(-1, 3).sum(axis=0, dtype=np.int64)])
        return crop

    real_sample_target = tracker_module.sample_target
    monkeypatch.setattr(tracker_module, "sample_target", spying_sample_target)
    if run == "real":
        net.load_state_dict(fixture_state_dict(variant), strict=True)
        backend = RecordingBackend(TorchBackend(net))
        interval = 200
    else:
        backend = RecordingBackend(ScriptedBackend(ref["scripted__script_boxes"][:, :], ref["scripted__script_logits"]))
        interval = 3
    settings = TrackerSettings(search_factor=FIXTURE_SEARCH_FACTOR[variant], update_interval=interval)
    trk = MixFormerTracker(backend, net.config.template_size, net.config.search_size, settings)
    frames, init_box = video_rgb()
    trk.initialize(frames[0], init_box)
    boxes, scores, sources = [init_box], [np.nan], []
    for i, frame in enumerate(frames[1:], start=1):
        current_frame[0] = i
        sources.append(trk.online_template_source)
        res = trk.track(frame)
        boxes.append(res.box)
        scores.append(res.score)
    return ref, np.array(boxes), np.array(scores), np.array(sources), np.array(crops), backend


@pytest.mark.parametrize("variant", ["S", "B"])
@pytest.mark.parametrize("run", ["real", "scripted"])
def test_tracker_matches_official_run(variant, run, monkeypatch):
    ref, boxes, scores, sources, crops, backend = run_fixture(variant, run, monkeypatch)
    p = f"{run}__"
    np.testing.assert_allclose(boxes, ref[p + "out_boxes_xywh"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(scores[1:], ref[p + "out_scores"][1:], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(sources, ref[p + "online_template_src_frame"])
    np.testing.assert_array_equal(crops, ref[p + "crop_checksums"])
    stats = {"template": [], "online_template": [], "search": []}
    for template, online, search in backend.calls:
        for name, crop in (("template", template), ("online_template", online), ("search", search)):
            stats[name].append(channel_stats(crop))
    for name, values in stats.items():
        np.testing.assert_allclose([m for m, _ in values], ref[f"{p}{name}_chan_mean"], rtol=0, atol=1e-5)
        np.testing.assert_allclose([s for _, s in values], ref[f"{p}{name}_chan_std"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["S", "B"])
def test_build_tracker_real_run(variant, tmp_path):
    """The public entry point, from an official-layout checkpoint file, gives the fixture's boxes."""
    from parity import write_fixture_checkpoint

    ckpt = tmp_path / f"mixformerv2_{variant}.pth.tar"
    write_fixture_checkpoint(variant, ckpt)
    ref = load_npz(f"tracker_{variant}.npz")
    trk = build_tracker(checkpoint=ckpt, backend="torch", device="cpu", preset="lasot")
    assert trk.settings.search_factor == FIXTURE_SEARCH_FACTOR[variant] and trk.settings.update_interval == 200
    frames, init_box = video_rgb()
    trk.initialize(frames[0], init_box)
    boxes = [init_box] + [trk.track(f).box for f in frames[1:]]
    np.testing.assert_allclose(boxes, ref["real__out_boxes_xywh"], rtol=0, atol=1e-3)
