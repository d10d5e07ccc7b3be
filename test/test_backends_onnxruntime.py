"""ONNX export and the ONNX Runtime backend: real exports of the fixture weights, real ORT sessions.

The S network is exported once for the module (on the fly, through build_tracker's cache path)
and the other S tests reuse that cache; B is exported once for its own tracker test.
"""
import json
import logging
import os
import shutil
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from parity import fixture_state_dict, load_npz, video_rgb, write_fixture_checkpoint
from paths import REPO_ROOT
from mixformer_ros.backends import export
from mixformer_ros.backends.onnxruntime_backend import OnnxModelError, OnnxRuntimeBackend
from mixformer_ros.model import MixFormerV2Config, build_mixformerv2, load_model
from mixformer_ros.tracking import build_tracker

pytestmark = pytest.mark.timeout(900)


def run_video(trk):
    frames, init_box = video_rgb()
    trk.initialize(frames[0], init_box)
    return np.array([init_box] + [trk.track(f).box for f in frames[1:]])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def ort_tracker_S(cache_dir):
    """The public entry point with backend="onnxruntime" and no ONNX file: exports into the cache."""
    return build_tracker(state_dict=fixture_state_dict("S"), backend="onnxruntime", num_threads=2,
                         backend_options={"cache_dir": str(cache_dir)})


@pytest.fixture(scope="module")
def export_dir_S(ort_tracker_S, cache_dir):
    (folder,) = [p for p in cache_dir.iterdir() if p.name.endswith("-fp32")]
    return folder


def test_onnxruntime_tracker_matches_fixture_and_torch(ort_tracker_S):
    ref = load_npz("tracker_S.npz")["real__out_boxes_xywh"]
    ort_boxes = run_video(ort_tracker_S)
    torch_boxes = run_video(build_tracker(state_dict=fixture_state_dict("S"), backend="torch"))
    np.testing.assert_allclose(ort_boxes, torch_boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ort_boxes, ref, rtol=0, atol=1e-3)
    backend = ort_tracker_S.backend
    assert backend.name == "onnxruntime" and backend.device == "cpu" and backend.num_threads == 2


def test_onnxruntime_tracker_matches_fixture_B(tmp_path):
    trk = build_tracker(state_dict=fixture_state_dict("B"), backend="onnxruntime", num_threads=2,
                        backend_options={"cache_dir": str(tmp_path)})
    ref = load_npz("tracker_B.npz")["real__out_boxes_xywh"]
    np.testing.assert_allclose(run_video(trk), ref, rtol=0, atol=1e-3)


def test_cache_is_keyed_by_weights_and_reused(export_dir_S, cache_dir):
    manifest = json.loads((export_dir_S / export.MANIFEST).read_text())
    model = load_model(state_dict=fixture_state_dict("S"))
    assert manifest["weights_sha256"] == export.weights_hash(model, "fp32")
    assert manifest["opset"] == export.OPSET and manifest["config"] == model.config.to_dict()
    assert max(d["pred_boxes"] for k, d in manifest["parity_max_abs"].items() if k != "encoder") <= 1e-4
    stamp = (export_dir_S / "predictor.onnx").stat().st_mtime_ns
    assert export.cached_export(model, "fp32", cache_dir) == export_dir_S
    assert (export_dir_S / "predictor.onnx").stat().st_mtime_ns == stamp  # reused, not exported again
    other = build_mixformerv2("S")  # different (random) weights -> different key
    assert export.weights_hash(other, "fp32") != manifest["weights_sha256"]


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = load_model(state_dict=fixture_state_dict("S"))
    with pytest.raises(export.ExportError, match="cannot write the ONNX export cache.*MIXFORMER_ROS_CACHE"):
        export.cached_export(model, "fp32", blocker / "cache")


def test_template_kv_stays_an_ortvalue_and_matches_torch(export_dir_S):
    backend = OnnxRuntimeBackend(export_dir_S, num_threads=1)
    model = load_model(state_dict=fixture_state_dict("S"))
    inputs = export.example_inputs(model, batch=1, seed=3)
    crop = {k: inputs[k][0].numpy() for k in ("template", "online_template", "search")}
    with pytest.raises(RuntimeError, match="before set_templates"):
        backend.predict(crop["search"])
    backend.set_templates(crop["template"], crop["online_template"])
    assert isinstance(backend._template_kv, ort.OrtValue)
    np.testing.assert_allclose(backend._template_kv.numpy(), inputs["template_kv"].numpy(), rtol=0, atol=1e-4)
    box, logit = backend.predict(crop["search"])
    with torch.inference_mode():
        ref = export.PredictorGraph(model)(inputs["search"], inputs["template_kv"])
    np.testing.assert_allclose(box, ref[0][0].numpy(), rtol=0, atol=1e-5)
    assert box.dtype == np.float32 and box.shape == (4,)
    assert logit == pytest.approx(float(ref[1][0]), abs=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        backend.predict(crop["search"].astype(np.float32))


def test_export_cli_full_graph_dynamic_batch(tmp_path, capsys):
    ckpt = tmp_path / "S.pth.tar"
    write_fixture_checkpoint("S", ckpt)
    out = tmp_path / "export"
    assert export.main([str(ckpt), "-o", str(out), "--graphs", "full"]) == 0
    assert "parity full" in capsys.readouterr().out
    manifest = json.loads((out / export.MANIFEST).read_text())
    assert manifest["graphs"] == {"full": "full.onnx"} and manifest["parity_max_abs"]["full"]["pred_boxes"] <= 1e-4
    sess = ort.InferenceSession(str(out / "full.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["template", "online_template", "search"]
    assert [o.name for o in sess.get_outputs()] == ["pred_boxes", "pred_scores"]
    model = load_model(checkpoint=ckpt)
    inputs = export.example_inputs(model, batch=3, seed=5)  # batch 3 was never traced: the batch axis is dynamic
    boxes, scores = sess.run(None, {k: inputs[k].numpy() for k in ("template", "online_template", "search")})
    with torch.inference_mode():
        ref = export.FullGraph(model)(inputs["template"], inputs["online_template"], inputs["search"])
    assert boxes.shape == (3, 4) and scores.shape == (3,)
    np.testing.assert_allclose(boxes, ref[0].numpy(), rtol=0, atol=1e-4)


def test_export_cli_help_and_bad_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(["--help"])
    assert exc.value.code == 0 and "uint8" in capsys.readouterr().out
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    assert export.main([str(bad), "-o", str(tmp_path / "x")]) == 1
    assert "export failed" in capsys.readouterr().err and not (tmp_path / "x").exists()
    ckpt = tmp_path / "S.pth.tar"
    write_fixture_checkpoint("S", ckpt)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert export.main([str(ckpt), "-o", str(precious)]) == 1  # not an export folder: never deleted
    assert "refusing" in capsys.readouterr().err and (precious / "notes.txt").read_text() == "keep me"


def test_missing_corrupt_or_mismatched_onnx_model_is_a_clear_error(export_dir_S, tmp_path):
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(export_dir_S, broken)
    data = (broken / "predictor.onnx").read_bytes()
    (broken / "predictor.onnx").write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(OnnxModelError, match="predictor.onnx"):
        OnnxRuntimeBackend(broken)
    (broken / "predictor.onnx").unlink()
    with pytest.raises(OnnxModelError, match="missing"):
        OnnxRuntimeBackend(broken)
    (broken / export.MANIFEST).write_text("{ not json")
    with pytest.raises(OnnxModelError, match="corrupt"):
        OnnxRuntimeBackend(broken)
    with pytest.raises(OnnxModelError, match="exported for"):
        build_tracker(variant="B", backend="onnxruntime", backend_options={"onnx_model": str(export_dir_S)})
    with pytest.raises(OnnxModelError, match="exported from other weights than the tracker's checkpoint"):
        OnnxRuntimeBackend.from_model(build_mixformerv2("S"), onnx_model=export_dir_S)  # same shape, other weights
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # the CPU-only install's message
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            OnnxRuntimeBackend(export_dir_S, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        OnnxRuntimeBackend(export_dir_S, device="tpu")
    net = build_mixformerv2("S")
    for cpu in ("cpu", "cpu:0"):
        with pytest.raises(ValueError, match="fp16 graphs are for CUDA"):
            OnnxRuntimeBackend.from_model(net, device=cpu, precision="fp16")
    with pytest.raises(ValueError, match="int8 .* CPU path"):
        OnnxRuntimeBackend.from_model(net, device="cuda", precision="int8")
    with pytest.raises(ValueError, match="unknown precision"):
        OnnxRuntimeBackend.from_model(net, precision="bf16")


def test_an_onnx_folder_alone_brings_the_weights(export_dir_S):
    """Deployment with the export only: no checkpoint, the variant gives the shape, no untrained warning."""
    trk = build_tracker(variant="S", backend="onnxruntime", num_threads=2,
                        backend_options={"onnx_model": str(export_dir_S)})
    np.testing.assert_allclose(run_video(trk), load_npz("tracker_S.npz")["real__out_boxes_xywh"], rtol=0, atol=1e-3)


def test_an_onnx_folder_alone_brings_a_network_of_any_shape(tmp_path):
    """Without a variant the export's manifest gives the shape: a small trained network is not taken for S."""
    demo = REPO_ROOT / "models" / "demo_tracker.pth.tar"
    from_checkpoint = build_tracker(checkpoint=demo, backend="onnxruntime", backend_options={"cache_dir": str(tmp_path)})
    (folder,) = tmp_path.iterdir()
    alone = build_tracker(backend="onnxruntime", backend_options={"onnx_model": str(folder)})
    assert (alone.template_size, alone.search_size) == (32, 96)
    # The cache folder records the crop the file was trained with, so the folder alone crops the same way.
    assert alone.settings == from_checkpoint.settings and alone.settings.search_factor == 4.5
    np.testing.assert_array_equal(run_video(alone), run_video(from_checkpoint))
    # A cache folder written before manifests recorded the crop is brought up to date on its next use.
    manifest_path = folder / export.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["trained_crop"]
    manifest_path.write_text(json.dumps(manifest))
    build_tracker(checkpoint=demo, backend="onnxruntime", backend_options={"cache_dir": str(tmp_path)})
    assert json.loads(manifest_path.read_text())["trained_crop"] == {"search_factor": 4.5, "template_factor": 2.0}


def test_a_damaged_cached_export_is_made_again_and_leftovers_are_swept(tmp_path, caplog):
    small = MixFormerV2Config(depth=1, embed_dim=64, num_heads=1, mlp_ratio=1.0, template_size=32, search_size=64,
                              patch_size=16, num_bins=16)
    model = build_mixformerv2(small)
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # refused before any export work
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            OnnxRuntimeBackend.from_model(model, device="cuda", cache_dir=tmp_path)
        assert not any(tmp_path.iterdir())
    folder = export.cached_export(model, "fp32", tmp_path)
    (folder / "predictor.onnx").write_bytes(b"")  # a graph emptied by a power cut
    leftover = tmp_path / f".{folder.name}.killed"  # the temporary folder of an export killed long ago
    leftover.mkdir()
    old = time.time() - 2 * export.STALE_EXPORT_S
    os.utime(leftover, (old, old))
    with caplog.at_level(logging.WARNING):
        backend = OnnxRuntimeBackend.from_model(model, cache_dir=tmp_path)
    assert "does not load" in caplog.text and "exporting it again" in caplog.text
    assert (folder / "predictor.onnx").stat().st_size > 0 and not leftover.exists()
    backend.set_templates(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))
    assert np.all(np.isfinite(backend.predict(np.zeros((64, 64, 3), np.uint8))[0]))


def test_cache_heals_a_folder_without_manifest_and_a_damaged_fp32_source(tmp_path, caplog):
    """Left by a crash or a power cut, neither may block every later start until someone clears the cache."""
    small = MixFormerV2Config(depth=1, embed_dim=64, num_heads=1, mlp_ratio=1.0, template_size=32, search_size=64,
                              patch_size=16, num_bins=16)
    model = build_mixformerv2(small)
    folder = export.cached_export(model, "fp32", tmp_path)
    (folder / export.MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        assert export.cached_export(model, "fp32", tmp_path) == folder
    assert "exporting again" in caplog.text and (folder / export.MANIFEST).is_file()
    predictor = folder / "predictor.onnx"
    predictor.write_bytes(predictor.read_bytes()[: predictor.stat().st_size // 2])  # the int8 graphs' source
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        int8 = export.cached_export(model, "int8", tmp_path)
    assert "from the cached fp32 export" in caplog.text and "exporting both again" in caplog.text
    backend = OnnxRuntimeBackend.from_model(model, precision="int8", onnx_model=int8)
    backend.set_templates(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))
    assert np.all(np.isfinite(backend.predict(np.zeros((64, 64, 3), np.uint8))[0]))


def test_an_export_finished_first_by_another_process_is_kept(tmp_path):
    """Two nodes exporting the same checkpoint on first boot: the second keeps the first one's folder."""
    model = build_mixformerv2(MixFormerV2Config(depth=1, embed_dim=64, num_heads=1, mlp_ratio=1.0, template_size=32,
                                                search_size=64, patch_size=16, num_bins=16))
    export.export_model(model, tmp_path / "export", kinds=("encoder",), check=False)
    marker = tmp_path / "export" / "placed_by_the_first"
    marker.touch()
    export.export_model(model, tmp_path / "export", kinds=("encoder",), check=False)
    assert marker.exists() and not list(tmp_path.glob(".export.*"))  # its own copy dropped, nothing left over
    export.export_model(model, tmp_path / "export", kinds=("encoder", "predictor"), check=False)
    assert not marker.exists() and (tmp_path / "export" / "predictor.onnx").is_file()  # more graphs: replaced


def test_int8_derived_from_cached_fp32_and_tracks(export_dir_S, cache_dir):
    """int8 quantises the predictor's MatMuls only; the encoder stays fp32 (it runs once per update)."""
    import onnx

    trk = build_tracker(state_dict=fixture_state_dict("S"), backend="onnxruntime", precision="int8", num_threads=2,
                        backend_options={"cache_dir": str(cache_dir)})
    folder = [p for p in cache_dir.iterdir() if p.name.endswith("-int8")][0]
    ops = {n.op_type for n in onnx.load(str(folder / "predictor.onnx")).graph.node}
    assert "MatMulInteger" in ops
    enc_ops = {n.op_type for n in onnx.load(str(folder / "encoder.onnx")).graph.node}
    assert "MatMulInteger" not in enc_ops
    boxes = run_video(trk)
    ref = load_npz("tracker_S.npz")["real__out_boxes_xywh"]
    assert np.all(np.isfinite(boxes)) and boxes.shape == ref.shape
    # Fixture weights are random, so agreement is loose here; bench/int8_agreement.py measures it on real video.
    assert np.max(np.abs(boxes - ref)) < 0.05 * max(video_rgb()[0][0].shape)
