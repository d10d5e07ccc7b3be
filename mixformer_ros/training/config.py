"""Training configuration: small dataclasses read from YAML, with every mistake reported by name.

The defaults are the official MixFormerV2 values where the paper/code states one (AdamW,
weight decay 1e-4, gradient-norm clip 0.1, L1 weight 5, GIoU weight 2, template factor 2); the
rest are documented in docs/training.md.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixformer_ros.model import MixFormerV2Config

from .data.processing import CropConfig
from .data.sampler import SamplerConfig
from .data.synthetic import SyntheticConfig
from .elimination import DECAY_SHAPES

STAGES = ("train", "distill", "score")


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class DatasetSpec:
    """One real dataset: type in {otb, got10k, lasot, trackingnet, coco}, its root and a weight."""

    type: str
    root: str
    weight: float = 1.0
    sequences: list[str] | None = None   # restrict to these sequence names (otb/got10k/lasot/trackingnet)
    split: str | None = None             # got10k: train/val; coco: train2017/...
    chunks: list[int] | None = None      # trackingnet: TRAIN_<i> chunks


@dataclass(frozen=True)
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)
    synthetic: SyntheticConfig | None = field(default_factory=SyntheticConfig)
    synthetic_weight: float = 1.0
    samples_per_epoch: int = 60000
    num_workers: int = 2
    crop: CropConfig = field(default_factory=CropConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 500
    batch_size: int = 16              # per process
    lr: float = 1e-4
    # Learning-rate multiplier of the backbone relative to the heads (official: 0.1 when fine-tuning
    # a pretrained backbone). From scratch, a low value makes the heads learn fast.
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "step"            # "step" (x0.1 at lr_drop) or "cosine"
    lr_drop: float = 0.8              # fraction of training after which the step schedule drops
    warmup_steps: int = 0
    grad_clip_norm: float = 0.1
    amp: str = "auto"                 # "auto" (on for CUDA), "on", "off"


@dataclass(frozen=True)
class LossConfig:
    l1: float = 5.0
    giou: float = 2.0
    ciou: float = 0.0
    side_label: float = 0.0           # ours, not official: CE of per-side logits vs ground-truth bins
    attention: float = 0.0            # ours, not official: prediction-token attention guidance
    attention_layers: list[int] = field(default_factory=lambda: [-1])
    kl: float = 1.0                   # per-side distribution distillation
    feature: float = 1.0              # feature mimicking (deep-to-shallow)
    score: float = 1.0


@dataclass(frozen=True)
class TeacherConfig:
    kind: str = "mixformerv2"         # "mixformerv2" (deep-to-shallow) or "dense" (dense-to-sparse)
    checkpoint: str | None = None


@dataclass(frozen=True)
class DistillConfig:
    # Student layers (numbered as in the teacher) whose residual branches decay to zero and are
    # then dropped. Empty = no elimination (e.g. pure dense-to-sparse).
    eliminate: list[int] = field(default_factory=list)
    decay_start: float = 0.0          # fraction of training when decay begins
    decay_end: float = 0.5            # fraction of training when the rate reaches 0
    decay_shape: str = "cosine"
    # [student_layer, teacher_layer] pairs whose output tokens are matched with MSE.
    mimic: list[list[int]] = field(default_factory=list)
    student_mlp_ratio: float | None = None   # MLP-ratio reduction when initialising from the teacher
    init_from_teacher: bool = True


@dataclass(frozen=True)
class ModelConfig:
    # "mixformerv2", "dense" (train the dense teacher) or "dense_aux" (the sparse network trained from
    # scratch together with a corner head on its search tokens, dropped when saving)
    kind: str = "mixformerv2"
    network: MixFormerV2Config = field(default_factory=lambda: MixFormerV2Config(depth=4, mlp_ratio=1.0,
                                                                                 template_size=112, search_size=224))
    init_checkpoint: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "train"
    seed: int = 0
    output_dir: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    log_every: int = 20
    checkpoint_every: int = 200       # steps between resumable checkpoints (and at every epoch end)
    tensorboard: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: Any, where: str):
    """Recursively turn a YAML mapping into the dataclass `cls`, naming unknown or bad keys."""
    if values is None:
        return None
    if dataclasses.is_dataclass(values):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        key = f"{where}.{name}"
        if nested is list:
            kwargs[name] = [_build(DatasetSpec, v, f"{key}[{i}]") for i, v in enumerate(value or [])]
        elif nested is not None:
            kwargs[name] = _build(nested, value, key)
        elif isinstance(value, list) and name in ("frame_size", "num_distractors", "texture_dirs"):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(fields[name], value, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Numbers written in a form YAML reads as text ('1e-3') become numbers, and words YAML reads as
    booleans (on/off) become text again where a text value is expected; wrong types are errors."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if isinstance(value, os.PathLike):  # a Path from the API: files must stay plain data (weights_only)
        value = os.fspath(value)
    if kind == "str" and isinstance(value, bool):
        return "on" if value else "off"
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in ("float", "int") and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if kind in ("float", "int") and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if kind == "int":
            if value != int(value):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            value = int(value)
    return value


_NESTED = {
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "loss"): LossConfig,
    (TrainConfig, "teacher"): TeacherConfig,
    (TrainConfig, "distill"): DistillConfig,
    (ModelConfig, "network"): MixFormerV2Config,
    (DataConfig, "datasets"): list,
    (DataConfig, "synthetic"): SyntheticConfig,
    (DataConfig, "crop"): CropConfig,
    (DataConfig, "sampler"): SamplerConfig,
}


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Cross-field checks that single dataclasses cannot do."""
    problems = []
    if cfg.stage not in STAGES:
        problems.append(f"stage must be one of {STAGES}, got {cfg.stage!r}")
    if cfg.model.kind not in ("mixformerv2", "dense", "dense_aux"):
        problems.append(f"model.kind must be 'mixformerv2', 'dense' or 'dense_aux', got {cfg.model.kind!r}")
    if cfg.model.kind == "dense_aux" and (cfg.stage != "train" or cfg.model.init_checkpoint):
        problems.append("model.kind 'dense_aux' trains from scratch: stage 'train' with no model.init_checkpoint")
    if cfg.teacher.kind not in ("mixformerv2", "dense"):
        problems.append(f"teacher.kind must be 'mixformerv2' or 'dense', got {cfg.teacher.kind!r}")
    if cfg.stage == "distill" and not cfg.teacher.checkpoint:
        problems.append("stage 'distill' needs teacher.checkpoint")
    if cfg.stage in ("distill", "score") and cfg.model.kind != "mixformerv2":
        problems.append(f"stage {cfg.stage!r} trains a sparse MixFormerV2 student: model.kind must be 'mixformerv2'")
    if cfg.stage == "score" and not cfg.model.init_checkpoint:
        problems.append("stage 'score' fine-tunes a trained network: set model.init_checkpoint")
    if cfg.stage == "score" and cfg.data.sampler.negative_probability <= 0:
        problems.append("stage 'score' needs negatives: set data.sampler.negative_probability > 0 (official 0.5)")
    if not cfg.data.datasets and cfg.data.synthetic is None:
        problems.append("data: no datasets and no synthetic data")
    for spec in cfg.data.datasets:
        if spec.type not in ("otb", "got10k", "lasot", "trackingnet", "coco"):
            problems.append(f"data.datasets: unknown type {spec.type!r}")
        elif not Path(spec.root).is_dir():
            problems.append(f"data.datasets: {spec.type} root {spec.root} does not exist")
        if not spec.weight > 0:
            problems.append(f"data.datasets: {spec.type} weight must be > 0 (leave the dataset out instead), "
                            f"got {spec.weight}")
    net = cfg.model.network
    if cfg.data.crop.template_size != net.template_size or cfg.data.crop.search_size != net.search_size:
        problems.append(
            f"data.crop sizes ({cfg.data.crop.template_size}, {cfg.data.crop.search_size}) differ from "
            f"model.network ({net.template_size}, {net.search_size})"
        )
    if not cfg.optim.lr > 0:
        problems.append(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.data.sampler.max_gap < 1:
        problems.append(f"data.sampler.max_gap must be >= 1 frame, got {cfg.data.sampler.max_gap}")
    if cfg.optim.schedule not in ("step", "cosine"):
        problems.append(f"optim.schedule must be 'step' or 'cosine', got {cfg.optim.schedule!r}")
    if cfg.optim.amp not in ("auto", "on", "off"):
        problems.append(f"optim.amp must be auto/on/off, got {cfg.optim.amp!r}")
    if cfg.optim.batch_size < 1 or cfg.optim.epochs < 1 or cfg.data.samples_per_epoch < cfg.optim.batch_size:
        problems.append("optim.batch_size and optim.epochs must be >= 1 and samples_per_epoch >= batch_size")
    if cfg.stage != "score" and cfg.data.sampler.negative_probability > 0:
        problems.append("data.sampler.negative_probability > 0 only makes sense for stage 'score' "
                        "(box losses on a pair without the target teach the wrong box)")
    if cfg.data.synthetic is not None:
        if not cfg.data.synthetic_weight > 0:
            problems.append("data.synthetic_weight must be > 0; set data.synthetic: null to train without synthetic data")
        for folder in cfg.data.synthetic.texture_dirs:
            if not Path(folder).is_dir():
                problems.append(f"data.synthetic.texture_dirs: {folder} does not exist")
    if cfg.log_every < 1 or cfg.checkpoint_every < 1:
        problems.append("log_every and checkpoint_every must be >= 1")
    d = cfg.distill
    if not _is_index_list(d.eliminate):
        problems.append(f"distill.eliminate must be a list of layer indices, got {d.eliminate!r}")
    if not 0.0 <= d.decay_start < d.decay_end <= 1.0:
        problems.append(f"distill decay window must satisfy 0 <= decay_start < decay_end <= 1, "
                        f"got {d.decay_start}, {d.decay_end}")
    if d.decay_shape not in DECAY_SHAPES:
        problems.append(f"distill.decay_shape must be one of {DECAY_SHAPES}, got {d.decay_shape!r}")
    if not isinstance(d.mimic, list) or not all(_is_index_list(pair) and len(pair) == 2 for pair in d.mimic):
        problems.append(f"distill.mimic must be a list of [student_layer, teacher_layer] pairs, got {d.mimic!r}")
    if problems:
        raise ConfigError("invalid training config: " + "; ".join(problems))
    return cfg


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML file (optional), apply nested overrides, build and validate the config."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {p} is not a mapping")
        node[leaf] = value
    return validate(_build(TrainConfig, values, str(path) if path else "config"))


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ('optim.lr', 0.0003); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)
