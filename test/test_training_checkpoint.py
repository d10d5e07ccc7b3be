"""Checkpoints written by training load into the tracker; runs resume exactly; bad configs fail clearly."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from mixformer_ros.backends import export
from mixformer_ros.model import read_checkpoint
from mixformer_ros.tracking import build_tracker
from mixformer_ros.training.cli import main
from mixformer_ros.training.config import ConfigError, load_config
from mixformer_ros.training.data import SyntheticConfig, SyntheticDataset
from mixformer_ros.training.trainer import Trainer
from parity import write_fixture_checkpoint
from paths import REPO_ROOT, SOT_DIR
from training_helpers import TINY_NETWORK, tiny_config


def same_weights(a: Trainer, b: Trainer) -> bool:
    """Whether two trainers' networks hold the same weights (to float rounding)."""
    sa, sb = a.task.model.state_dict(), b.task.model.state_dict()
    return all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_trained_checkpoint_loads_into_build_tracker(tmp_path):
    crop = {"template_size": 32, "search_size": 64, "search_factor": 3.5, "template_factor": 2.5}
    cfg = tiny_config(tmp_path, **{"data.crop": crop})
    final = Trainer(cfg, device="cpu", resume=False).run()
    assert final.name == "model.pth.tar"
    state_dict, config, extra = read_checkpoint(final)
    assert config is not None and config.depth == TINY_NETWORK["depth"] and "training" in extra
    seq = SyntheticDataset(SyntheticConfig(num_sequences=1, num_frames=4, frame_size=(96, 80), seed=9))[0]
    for path in (final, tmp_path / "run" / "checkpoints" / "last.pth.tar"):
        tracker = build_tracker(checkpoint=str(path))  # no other argument: the file carries its config
        # Cropped as trained (the preset's 4.4 / 2.0 would show the network targets at another scale);
        # the preset still gives the update interval.
        assert (tracker.settings.search_factor, tracker.settings.template_factor, tracker.settings.update_interval) \
            == (3.5, 2.5, 200)
        tracker.initialize(seq.frame(0), seq.boxes[0].tolist())
        for i in range(1, 4):
            res = tracker.track(seq.frame(i))
            assert np.all(np.isfinite(res.box)) and 0.0 <= res.score <= 1.0
    overridden = build_tracker(checkpoint=str(final), search_factor=4.0).settings
    assert (overridden.search_factor, overridden.template_factor) == (4.0, 2.5)
    # Files that record no training (official ones) keep the official presets.
    official = tmp_path / "official.pth.tar"
    write_fixture_checkpoint("S", official)
    assert build_tracker(checkpoint=official).settings.search_factor == 4.4

    # An ONNX export carries the factors to a deployment that has only the export folder.
    onnx_folder = tmp_path / "export"
    assert export.main([str(final), "-o", str(onnx_folder), "--graphs", "encoder", "predictor"]) == 0
    onnx_only = build_tracker(backend="onnxruntime", backend_options={"onnx_model": str(onnx_folder)}).settings
    assert (onnx_only.search_factor, onnx_only.template_factor) == (3.5, 2.5)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full = Trainer(tiny_config(tmp_path / "a"), device="cpu", resume=False)
    full.run()
    first = Trainer(tiny_config(tmp_path / "b"), device="cpu", resume=False, max_steps=3)
    first.run()
    assert first.global_step == 3
    resumed = Trainer(tiny_config(tmp_path / "b"), device="cpu", resume=True)
    assert resumed.global_step == 3
    resumed.run()
    assert resumed.global_step == full.global_step == 8
    assert same_weights(full, resumed)


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path):
    """The optimizer, schedule and step come from the checkpoint: a changed learning rate would be
    ignored while the exported file recorded it."""
    Trainer(tiny_config(tmp_path), device="cpu", resume=False, max_steps=2).run()
    with pytest.raises(ConfigError, match=r"other settings \(optim.batch_size, optim.lr\).*--no-resume"):
        Trainer(tiny_config(tmp_path, **{"optim.lr": 0.5, "optim.batch_size": 8}), device="cpu", resume=True)
    logging_only = Trainer(tiny_config(tmp_path, log_every=5, checkpoint_every=7), device="cpu", resume=True)
    assert logging_only.global_step == 2


def test_sigterm_stops_a_cli_run_after_its_step_with_a_checkpoint(tmp_path):
    """A scheduler's time limit or docker stop: the run stops as on Ctrl-C and resumes from there."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, **{"optim.epochs": 50}).to_dict()))
    proc = subprocess.Popen([sys.executable, "-m", "mixformer_ros.training.cli", "train", "--config", str(config),
                             "--threads", "1"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, out
    _, _, extra = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth.tar")
    assert 3 <= extra["global_step"] < 50 * 8, out
    assert "Traceback" not in out


def test_ctrl_c_on_a_checkpoint_step_writes_the_checkpoint_once(tmp_path, caplog):
    """Step 4 is a checkpoint step: the interrupt that arrives during it finds the step saved."""
    run = Trainer(tiny_config(tmp_path, **{"checkpoint_every": 2}), device="cpu", resume=False)
    run.task.model.register_forward_hook(lambda *_: signal.raise_signal(signal.SIGINT) if run.global_step == 3 else None)
    last = tmp_path / "run" / "checkpoints" / "last.pth.tar"
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        run.run()
    assert "interrupted at step 4, which checkpoints/last.pth.tar holds" in caplog.text
    assert "saving a resumable checkpoint" not in caplog.text
    assert read_checkpoint(last)[2]["global_step"] == 4
    assert Trainer(tiny_config(tmp_path, **{"checkpoint_every": 2}), device="cpu", resume=True).global_step == 4


def test_ctrl_c_inside_a_step_saves_after_it_and_resumes_exactly(tmp_path):
    """The dense kind has BatchNorm, whose statistics move in the forward pass: Ctrl-C arriving
    there must not leave a checkpoint that is half a step ahead."""
    dense = {"model.kind": "dense"}
    full = Trainer(tiny_config(tmp_path / "a", **dense), device="cpu", resume=False)
    full.run()
    first = Trainer(tiny_config(tmp_path / "b", **dense), device="cpu", resume=False)
    first.task.model.register_forward_hook(
        lambda *_: signal.raise_signal(signal.SIGINT) if first.global_step == 3 else None)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed = Trainer(tiny_config(tmp_path / "b", **dense), device="cpu", resume=True)
    assert resumed.global_step == 4  # the interrupted step was finished, then saved
    resumed.run()
    assert same_weights(full, resumed)


def test_ctrl_c_holding_keeps_ignored_signals_ignored_and_lets_a_second_one_through():
    from mixformer_ros.training.trainer import held_interrupts

    finished = []
    with held_interrupts() as received:  # held: the block decides where to stop
        signal.raise_signal(signal.SIGINT)
        finished.append("step")
    assert finished == ["step"] and received == [signal.SIGINT]
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the user insists: no waiting for the step
            finished.append("unreachable")
    assert finished == ["step"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. `python -m ... train &` from a script
    try:
        with held_interrupts() as received:
            signal.raise_signal(signal.SIGINT)
        assert received == [] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_multi_epoch_run_with_a_data_worker_resumes_into_the_same_weights(tmp_path):
    """One loader serves all epochs (its worker lives through them); epochs drop their last partial
    batch; a run stopped inside epoch 2 and resumed equals an uninterrupted in-process run."""
    epochs = {"optim.epochs": 3, "data.samples_per_epoch": 34}  # 8 steps an epoch, 2 samples dropped
    in_process = Trainer(tiny_config(tmp_path / "a", **epochs), device="cpu", resume=False)
    in_process.run()
    with_worker = {**epochs, "data.num_workers": 1}
    first = Trainer(tiny_config(tmp_path / "b", **with_worker), device="cpu", resume=False, max_steps=11)
    first.run()
    resumed = Trainer(tiny_config(tmp_path / "b", **with_worker), device="cpu", resume=True)
    assert resumed.global_step == 11
    resumed.run()
    assert resumed.global_step == in_process.global_step == 24
    assert same_weights(in_process, resumed)


def test_a_data_worker_reads_real_sequences_as_the_training_process_does(tmp_path):
    real = {"data.datasets": [{"type": "otb", "root": str(SOT_DIR), "sequences": ["Crossing"], "weight": 1.0}]}
    in_process = Trainer(tiny_config(tmp_path / "a", **real), device="cpu", resume=False, max_steps=3)
    in_process.run()
    with_worker = Trainer(tiny_config(tmp_path / "b", **real, **{"data.num_workers": 1}), device="cpu", resume=False,
                          max_steps=3)
    with_worker.run()
    assert with_worker.global_step == 3
    assert same_weights(in_process, with_worker)


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="optim.*unknown key.*lrr"):
        tiny_config(tmp_path, **{"optim.lrr": 1.0})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        tiny_config(tmp_path, **{"optim.lr": "fast"})
    with pytest.raises(ConfigError, match="root .*does not exist"):
        tiny_config(tmp_path, **{"data.datasets": [{"type": "otb", "root": str(tmp_path / "nowhere")}]})
    with pytest.raises(ConfigError, match="needs teacher.checkpoint"):
        tiny_config(tmp_path, "distill")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    for overrides, message in [
        ({"log_every": 0}, "log_every and checkpoint_every must be >= 1"),
        ({"distill.decay_shape": "cosin"}, "decay_shape must be one of"),
        ({"distill.decay_start": 0.6, "distill.decay_end": 0.4}, "decay_start < decay_end"),
        ({"distill.eliminate": 1}, "distill.eliminate must be a list"),
        ({"distill.mimic": [[1]]}, "distill.mimic must be a list of"),
        ({"data.synthetic.texture_dirs": [str(tmp_path / "no_textures")]}, "texture_dirs: .* does not exist"),
        ({"data.synthetic_weight": 0}, "synthetic_weight must be > 0"),
        ({"data.sampler.negative_probability": 0.5}, "only makes sense for stage 'score'"),
        ({"optim.lr": -1e-3}, "optim.lr must be > 0"),
        ({"optim.lr": True}, "optim.lr: expected a number, got True"),
        ({"tensorboard": "maybe"}, "tensorboard: expected true or false"),
        ({"data.sampler.max_gap": 0}, "max_gap must be >= 1"),
        ({"data.datasets": [{"type": "otb", "root": str(SOT_DIR), "weight": 0}]}, "otb weight must be > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tiny_config(tmp_path, **overrides)
    # Checked against the network built (a fine-tune's depth comes from its file), before any step.
    with pytest.raises(ConfigError, match=r"attention_layers \[7\] must index the network's 2 layers"):
        Trainer(tiny_config(tmp_path, **{"loss.attention_layers": [7]}), device="cpu", resume=False)


def test_networks_that_do_not_fit_the_run_are_named_before_training(tmp_path):
    small = Trainer(tiny_config(tmp_path / "small"), device="cpu", resume=False).run()
    with pytest.raises(ConfigError, match="network takes 32/64 px .* data.crop gives 48/96"):
        Trainer(tiny_config(tmp_path / "ft", **{"model.init_checkpoint": str(small),
                                                "model.network.template_size": 48, "model.network.search_size": 96,
                                                "data.crop": {"template_size": 48, "search_size": 96}}),
                device="cpu", resume=False)
    # The same output folder, now for a deeper network: resuming the old run is refused with a way out.
    deeper = tiny_config(tmp_path / "small", **{"model.network.depth": 3})
    with pytest.raises(ConfigError, match=r"other settings \(model.network.depth\).*new output_dir or --no-resume"):
        Trainer(deeper, device="cpu", resume=True)
    assert Trainer(deeper, device="cpu", resume=False).global_step == 0
    # Fine-tuning takes the file's network; the run records that one, not the config's model.network.
    finetune = Trainer(tiny_config(tmp_path / "ft2", **{"model.init_checkpoint": str(small), "model.network.depth": 3}),
                       device="cpu", resume=False, max_steps=1)
    assert read_checkpoint(finetune.run())[2]["training"]["model"]["network"]["depth"] == 2


def test_amp_on_and_off_survive_yaml_reading_them_as_booleans(tmp_path):
    """`--set optim.amp=on` (YAML 1.1 reads on/off as true/false) means what the user typed."""
    from mixformer_ros.training.config import parse_override

    for word in ("on", "off"):
        key, value = parse_override(f"optim.amp={word}")
        assert tiny_config(tmp_path, **{key: value}).optim.amp == word
    with pytest.raises(ConfigError, match="optim.amp must be auto/on/off"):
        tiny_config(tmp_path, **{"optim.amp": "fast"})


def test_cli_exits_2_with_a_message_on_a_bad_config(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stage": "train", "model": {"network": {"depth": 0}}}))
    with caplog.at_level(logging.ERROR):
        assert main(["train", "--config", str(bad)]) == 2
    assert "depth must be >= 1" in caplog.text
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_dense_teacher_files_say_what_they_are(tmp_path):
    from mixformer_ros.model import CheckpointError
    from mixformer_ros.training.stages import load_network
    from mixformer_ros.training.teachers import DENSE_TEACHER_FORMAT

    final = Trainer(tiny_config(tmp_path, **{"model.kind": "dense"}), device="cpu", resume=False).run()
    for path in (final, tmp_path / "run" / "checkpoints" / "last.pth.tar"):
        assert read_checkpoint(path)[2]["format"] == DENSE_TEACHER_FORMAT
        assert load_network(str(path), "dense").corner_head is not None
        with pytest.raises(CheckpointError, match="dense-teacher.* not a tracker network"):
            build_tracker(checkpoint=str(path))  # the tracker needs prediction tokens, not corner maps
    with pytest.raises(ConfigError, match="holds a dense network"):
        load_network(str(final), "mixformerv2")


def test_dense_aux_run_saves_a_tracker_checkpoint_and_resumes(tmp_path):
    from mixformer_ros.training.teachers import DENSE_AUX_FORMAT

    cfg = tiny_config(tmp_path, **{"model.kind": "dense_aux"})
    final = Trainer(cfg, device="cpu", resume=False).run()
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth.tar")[2]["format"] == DENSE_AUX_FORMAT
    build_tracker(checkpoint=str(final))  # the corner head is gone: a plain MixFormerV2 file
    with pytest.raises(ConfigError, match="dense_aux"):
        tiny_config(tmp_path, "distill", **{"model.kind": "dense_aux", "teacher.checkpoint": str(final)})
