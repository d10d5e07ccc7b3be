"""One optimisation step of every training stage runs and lowers its loss on a fixed batch."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from mixformer_ros.training.config import ConfigError
from mixformer_ros.training.trainer import Trainer
from training_helpers import TINY_NETWORK, tiny_config


def _fixed_batch(trainer: Trainer) -> dict:
    batch = next(iter(trainer._loader(start_step=0, end_step=1)))
    batch.pop("skipped")
    return batch


def _loss(trainer: Trainer, batch: dict) -> float:
    with torch.no_grad():
        return trainer.task.loss(trainer.net, batch, trainer.device)[0].item()


def _assert_step_lowers_loss(cfg, steps: int = 1) -> Trainer:
    trainer = Trainer(cfg, device="cpu", resume=False)
    batch = _fixed_batch(trainer)
    trainer.task.set_progress(0.0)
    before = _loss(trainer, batch)
    for _ in range(steps):
        trainer.global_step = 0  # keep the schedules (lr, elimination rate) where `before` was measured
        stats = trainer.train_step(batch)
    trainer.task.set_progress(0.0)
    after = _loss(trainer, batch)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert after < before, f"{cfg.stage}: loss {before:.4f} -> {after:.4f}"
    return trainer


def _train_and_save(tmp_path, name: str, **overrides) -> str:
    cfg = tiny_config(tmp_path / name, **overrides)
    return str(Trainer(cfg, device="cpu", resume=False, max_steps=None).run())


def test_train_sparse_step(tmp_path):
    trainer = _assert_step_lowers_loss(tiny_config(tmp_path, **{"optim.warmup_steps": 0, "loss.attention": 1.0,
                                                                "loss.side_label": 1.0}))
    assert {"attention", "side_label"} <= set(trainer.train_step(_fixed_batch(trainer)))


def test_train_dense_teacher_step(tmp_path):
    _assert_step_lowers_loss(tiny_config(tmp_path, **{"model.kind": "dense"}))


def test_train_dense_aux_step_and_export_drops_the_corner_head(tmp_path):
    trainer = _assert_step_lowers_loss(tiny_config(tmp_path, **{"model.kind": "dense_aux", "loss.kl": 1.0,
                                                                "loss.attention": 1.0, "loss.side_label": 1.0}))
    assert {"kl", "attention", "dense_iou", "iou"} <= set(trainer.train_step(_fixed_batch(trainer)))
    net, _ = trainer.task.export()
    assert type(net).__name__ == "MixFormerV2" and not any(k.startswith("corner_head.") for k in net.state_dict())
    state = trainer.task.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_distill_dense_to_sparse_step(tmp_path):
    teacher = _train_and_save(tmp_path, "teacher", **{"model.kind": "dense"})
    cfg = tiny_config(tmp_path, "distill", **{"teacher.kind": "dense", "teacher.checkpoint": teacher,
                                              "loss.kl": 1.0})
    trainer = _assert_step_lowers_loss(cfg)
    assert "kl" in trainer.train_step(_fixed_batch(trainer))


def test_distill_deep_to_shallow_step_with_mimic_and_mlp_reduction(tmp_path):
    teacher = _train_and_save(tmp_path, "teacher", **{"model.network.depth": 3})
    cfg = tiny_config(tmp_path, "distill", **{
        "teacher.checkpoint": teacher, "model.network.depth": 3, "model.network.mlp_ratio": 1.0, "optim.lr": 5e-5,
        "distill": {"eliminate": [1], "mimic": [[2, 2]], "student_mlp_ratio": 1.0, "decay_end": 0.5},
    })
    trainer = _assert_step_lowers_loss(cfg)
    student = trainer.task.model
    assert student.config.mlp_ratio == 1.0 and student.backbone.blocks[0].mlp.fc1.out_features == 32
    stats = trainer.train_step(_fixed_batch(trainer))
    assert {"kl", "feature", "elimination_rate"} <= set(stats)


def test_a_finished_distillation_asks_for_the_score_stage(tmp_path, caplog):
    teacher = _train_and_save(tmp_path, "teacher", **{"model.network.depth": 3})
    cfg = tiny_config(tmp_path / "student", "distill", **{"teacher.checkpoint": teacher, "model.network.depth": 3,
                                                           "distill": {"eliminate": [1]}})
    with caplog.at_level(logging.WARNING):
        final = Trainer(cfg, device="cpu", resume=False).run()
    assert f"run the score stage on it (model.init_checkpoint={final})" in caplog.text


def test_score_step_trains_only_the_score_head(tmp_path):
    init = _train_and_save(tmp_path, "base")
    cfg = tiny_config(tmp_path, "score", **{"model.init_checkpoint": init,
                                            "data.sampler.negative_probability": 0.5})
    trainer = Trainer(cfg, device="cpu", resume=False)
    frozen = {k: v.clone() for k, v in trainer.task.model.state_dict().items() if not k.startswith("score_head.")}
    _assert_step_lowers_loss(cfg)
    trainer.train_step(_fixed_batch(trainer))
    after = trainer.task.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    labels = _fixed_batch(trainer)["label"]
    assert 0 < labels.sum() < len(labels) or len(labels) < 4  # negatives and positives are drawn


def test_distill_into_a_smaller_input_size(tmp_path):
    """The B -> S path changes the input size: the teacher sees the same crops resized to its own."""
    teacher = _train_and_save(tmp_path, "teacher", **{"model.network.depth": 2})
    cfg = tiny_config(tmp_path, "distill", **{
        "teacher.checkpoint": teacher, "optim.lr": 5e-5,
        "model.network": {**TINY_NETWORK, "mlp_ratio": 1.0, "template_size": 16, "search_size": 48},
        "data.crop": {"template_size": 16, "search_size": 48},
        "distill": {"student_mlp_ratio": 1.0},
    })
    trainer = _assert_step_lowers_loss(cfg)
    assert trainer.task.model.config.search_size == 48 and trainer.task.teacher.config.search_size == 64


def test_distill_configs_that_do_not_fit_the_teacher_are_named(tmp_path):
    teacher = _train_and_save(tmp_path, "teacher")  # 2 layers, MLP ratio 2
    base = {"teacher.checkpoint": teacher}
    cases = [
        ({"distill.eliminate": [2]}, "distill.eliminate .*layers are 0..1"),
        ({"distill.mimic": [[0, 5]]}, "distill.mimic .*teacher layers 0..1"),
        ({"model.network.depth": 4}, "model.network must describe the student.*depth"),
        ({"distill.student_mlp_ratio": 1.0}, "model.network must describe the student.*mlp_ratio"),
        ({"distill.student_mlp_ratio": 3.0, "model.network.mlp_ratio": 3.0}, "distill.student_mlp_ratio: "),
        ({"distill.eliminate": [0, 1]}, r"must name distinct layers and keep at least one of the student's 2"),
        ({"distill.eliminate": [1, 1]}, r"must name distinct layers"),
        ({"distill.eliminate": [1], "distill.mimic": [[1, 1]]}, "names a student layer that distill.eliminate"),
        ({"loss.attention_layers": [5]}, r"attention_layers \[5\] must index the student's 2 layers"),
        ({"distill.eliminate": [1], "distill.decay_end": 1.0}, "decay_end 1.0 is not reached within the run's 8 steps"),
        ({"model.init_checkpoint": teacher, "model.network.depth": 3},
         "model.network must describe the student in model.init_checkpoint"),
        ({"model.init_checkpoint": teacher, "distill.student_mlp_ratio": 1.0},
         "student_mlp_ratio 1.0 applies when the student starts from the teacher; .* has MLP ratio 2.0"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            Trainer(tiny_config(tmp_path / "student", "distill", **base, **overrides), device="cpu", resume=False)
    # A Path from the API is stored as text: the run's files must stay loadable with weights_only=True.
    assert tiny_config(tmp_path, "distill", **{"teacher.checkpoint": Path(teacher)}).teacher.checkpoint == str(teacher)


def test_a_run_still_removing_layers_saves_files_only_training_resumes(tmp_path):
    from mixformer_ros.model import CheckpointError
    from mixformer_ros.tracking import build_tracker
    from mixformer_ros.training.stages import load_network

    teacher = _train_and_save(tmp_path, "teacher")
    cfg = tiny_config(tmp_path / "student", "distill", **{"teacher.checkpoint": teacher, "distill.eliminate": [1],
                                                          "distill.decay_end": 0.5})
    trainer = Trainer(cfg, device="cpu", resume=False)
    final = trainer.run()
    last = tmp_path / "student" / "run" / "checkpoints" / "last.pth.tar"
    with pytest.raises(CheckpointError, match="distill-eliminating.* not a tracker network"):
        build_tracker(checkpoint=str(last))  # the unpruned student, its decayed layer at full strength
    with pytest.raises(ConfigError, match="still removing layers; use its model.pth.tar"):
        load_network(str(last))
    assert build_tracker(checkpoint=str(final)).backend is not None
    assert load_network(str(final)).config.depth == 1
    assert Trainer(cfg, device="cpu", resume=True).global_step == trainer.global_step  # it resumes from last
