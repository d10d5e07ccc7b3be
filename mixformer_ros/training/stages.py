"""The three training stages as tasks the Trainer runs: what is trained, and its loss.

* ``SupervisedTask`` (stage ``train``): a sparse MixFormerV2 or the dense teacher, from labels.
* ``DistillTask`` (stage ``distill``): a sparse student from a frozen teacher. Dense-to-sparse
  (the teacher's corner maps, marginalised per side, supervise the student's per-side logits with
  KL) and deep-to-shallow (progressive layer elimination, feature mimicking, MLP-ratio reduction)
  are the same task with different settings.
* ``ScoreTask`` (stage ``score``): only the score head learns, with BCE on positive/negative pairs.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from mixformer_ros.model import (MixFormerV2, MixFormerV2Config, build_mixformerv2, config_from_state_dict, load_weights,
                                 read_checkpoint)
from mixformer_ros.backends.torch_backend import Normalize

from .config import ConfigError, TrainConfig
from .elimination import elimination_rate, make_decayable, prune_layers, reduce_mlp, set_residual_scale
from .losses import (ciou_loss, cxcywh_to_xyxy, feature_mimic_loss, giou_loss, score_loss, side_distribution_kl,
                     side_label_loss)
from .guidance import BlockInputTap, prediction_token_attention_loss
from .teachers import DENSE_AUX_FORMAT, DENSE_TEACHER_FORMAT, DenseAuxNetwork, DenseTeacher

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _normalizer(device: torch.device) -> Normalize:
    return Normalize().to(device)


def normalise(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (B, 3, H, W) crops -> float inputs normalised exactly like the tracker's preprocessing."""
    norm = _normalizer(device)
    return tuple(
        norm(batch[k].to(device, non_blocking=True).permute(0, 2, 3, 1))  # NHWC view, as crops come
        for k in ("template", "online_template", "search")
    )


DISTILL_ELIMINATING_FORMAT = "mixformer_ros/distill-eliminating/1"  # resumable files of deep-to-shallow runs


def load_network(path: str, kind: str = "mixformerv2") -> nn.Module:
    """A sparse MixFormerV2 or a dense teacher from one of our (or an official) checkpoint files."""
    state_dict, config, extra = read_checkpoint(path)
    if extra.get("format") == DISTILL_ELIMINATING_FORMAT:
        raise ConfigError(f"{path} is a resumable file of a run still removing layers; use its model.pth.tar")
    file_kind = "dense" if extra.get("format") == DENSE_TEACHER_FORMAT else "mixformerv2"
    if file_kind != kind:
        raise ConfigError(f"{path} holds a {file_kind} network, but a {kind} network was asked for")
    if kind == "dense":
        net = DenseTeacher(MixFormerV2Config.from_dict(extra["config"]))
        net.load_state_dict(state_dict, strict=True)
        return net
    net = build_mixformerv2(config or config_from_state_dict(state_dict))
    load_weights(net, state_dict, path)
    return net


def box_losses(pred: torch.Tensor, gt: torch.Tensor, cfg: TrainConfig,
               side_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Weighted L1 + GIoU (+ CIoU, + per-side label loss) between (B, 4) cx,cy,w,h boxes."""
    w = cfg.loss
    p_xyxy, g_xyxy = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt)
    l1 = (p_xyxy - g_xyxy).abs().mean()
    # An untrained head can put the right side left of the left side; (G/C)IoU see such a box as a
    # point at its centre (L1 alone untangles the sides) instead of rewarding the inversion.
    p_xyxy = cxcywh_to_xyxy(torch.cat([pred[:, :2], pred[:, 2:].clamp(min=0)], dim=1))
    giou, iou = giou_loss(p_xyxy, g_xyxy)
    loss = w.l1 * l1 + w.giou * giou
    stats = {"l1": l1.item(), "giou": giou.item(), "iou": iou.mean().item()}
    if w.ciou > 0:
        ciou = ciou_loss(p_xyxy, g_xyxy)
        loss = loss + w.ciou * ciou
        stats["ciou"] = ciou.item()
    if w.side_label > 0 and side_logits is not None:
        side = side_label_loss(side_logits.float(), g_xyxy)
        loss = loss + w.side_label * side
        stats["side_label"] = side.item()
    return loss, stats


def attention_tap(task) -> BlockInputTap | None:
    """Hooks on the blocks whose prediction-token attention is guided; installed before the first forward."""
    if task.cfg.loss.attention <= 0:
        return None
    if getattr(task, "_attention_tap", None) is None:
        task._attention_tap = BlockInputTap(task.model.backbone.blocks, task.cfg.loss.attention_layers)
    return task._attention_tap


def attention_guidance(task, gt: torch.Tensor, loss: torch.Tensor, stats: dict) -> torch.Tensor:
    """Add the prediction-token attention loss when the config asks for it (see guidance.py)."""
    w = task.cfg.loss
    if w.attention <= 0:
        return loss
    c = task.model.config
    att = prediction_token_attention_loss(task._attention_tap, gt, 2 * c.template_tokens, c.search_size // c.patch_size)
    stats["attention"] = att.item()
    return loss + w.attention * att


class Task:
    """What a stage trains (``model``), how its loss is computed, and what it finally saves."""

    model: nn.Module

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def set_progress(self, progress: float) -> None:
        """Called before each step with the fraction of training done (schedules hook in here)."""

    def loss(self, net: nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def file_fields(self) -> dict:
        """Checkpoint fields that say what kind of network the file holds."""
        return {}

    def export(self) -> tuple[nn.Module, dict]:
        """The network to save as the stage's result, plus extra checkpoint fields."""
        return self.model, self.file_fields()

    def to(self, device: torch.device) -> "Task":
        self.model.to(device)
        return self


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def dense_aux_loss(out: dict, gt: torch.Tensor, cfg: TrainConfig, stats: dict) -> torch.Tensor:
    """DenseAuxNetwork: box losses on its corner head, plus KL from the head's (detached) per-side
    marginals to the prediction tokens' logits."""
    dense = out["dense"]
    loss, dense_stats = box_losses(dense["pred_boxes"][:, 0].float(), gt, cfg, dense["side_logits"])
    stats.update({f"dense_{k}": v for k, v in dense_stats.items()})
    if cfg.loss.kl > 0:
        kl = side_distribution_kl(out["side_logits"].float(), {k: v.float() for k, v in dense.items() if k.startswith("prob_")})
        loss = loss + cfg.loss.kl * kl
        stats["kl"] = kl.item()
    return loss


class SupervisedTask(Task):
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        kind = cfg.model.kind
        if kind == "dense":
            self.model = (load_network(cfg.model.init_checkpoint, "dense") if cfg.model.init_checkpoint
                          else DenseTeacher(cfg.model.network))
        elif kind == "dense_aux":
            self.model = DenseAuxNetwork(cfg.model.network)
        else:
            self.model = (load_network(cfg.model.init_checkpoint) if cfg.model.init_checkpoint
                          else build_mixformerv2(cfg.model.network))
        if kind != "dense":
            # The score head learns in its own stage, on positive and negative pairs.
            _freeze(self.model.score_head)
        self.model.train()

    def loss(self, net, batch, device):
        t, ot, s = normalise(batch, device)
        kind = self.cfg.model.kind
        if kind != "dense":
            attention_tap(self)
        out = net(t, ot, s)
        gt = batch["search_box"].to(device)
        loss, stats = box_losses(out["pred_boxes"][:, 0].float(), gt, self.cfg, out["side_logits"])
        if kind == "dense":
            return loss, stats
        loss = attention_guidance(self, gt, loss, stats)
        if kind == "dense_aux":
            loss = loss + dense_aux_loss(out, gt, self.cfg, stats)
        return loss, stats

    def file_fields(self):
        return {"dense": {"format": DENSE_TEACHER_FORMAT},
                "dense_aux": {"format": DENSE_AUX_FORMAT}}.get(self.cfg.model.kind, {})

    def export(self):
        if self.cfg.model.kind == "dense_aux":
            return self.model.sparse(), {}
        return super().export()


class _TokenTap:
    """Records the output tokens of chosen blocks during a forward pass (forward hooks)."""

    def __init__(self, blocks: nn.Sequential, layers: list[int]):
        self.outputs: dict[int, torch.Tensor] = {}
        for i in layers:
            blocks[i].register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def hook(_module, _inputs, output):
            self.outputs[i] = output
        return hook


class DistillTask(Task):
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        d = cfg.distill
        self.teacher = load_network(cfg.teacher.checkpoint, cfg.teacher.kind).eval()
        _freeze(self.teacher)
        self.model = self._build_student()
        _freeze(self.model.score_head)
        student_depth, teacher_depth = len(self.model.backbone.blocks), len(self.teacher.backbone.blocks)
        if any(not 0 <= i < student_depth for i in d.eliminate):
            raise ConfigError(f"distill.eliminate {d.eliminate}: the student's layers are 0..{student_depth - 1}")
        if len(set(d.eliminate)) != len(d.eliminate) or len(d.eliminate) >= student_depth:
            raise ConfigError(f"distill.eliminate {d.eliminate} must name distinct layers and keep at least one of "
                              f"the student's {student_depth}")
        if any(not (0 <= s < student_depth and 0 <= t < teacher_depth) for s, t in d.mimic):
            raise ConfigError(f"distill.mimic {d.mimic}: student layers are 0..{student_depth - 1}, "
                              f"teacher layers 0..{teacher_depth - 1}")
        if any(s in d.eliminate for s, _ in d.mimic):
            raise ConfigError(f"distill.mimic {d.mimic} names a student layer that distill.eliminate {d.eliminate} "
                              "removes; mimic with the kept layers")
        self.decaying = make_decayable(self.model, d.eliminate) if d.eliminate else []
        t_cfg, s_cfg = self.teacher.config, self.model.config
        if t_cfg.num_bins != s_cfg.num_bins:
            raise ConfigError(f"teacher and student need the same num_bins for KL: {t_cfg.num_bins} vs {s_cfg.num_bins}")
        self.resize_for_teacher = (t_cfg.template_size, t_cfg.search_size) != (s_cfg.template_size, s_cfg.search_size)
        if d.mimic and (cfg.teacher.kind != "mixformerv2" or self.resize_for_teacher
                        or t_cfg.embed_dim != s_cfg.embed_dim or t_cfg.patch_size != s_cfg.patch_size):
            raise ConfigError("distill.mimic needs a MixFormerV2 teacher with the student's width and input sizes "
                              "(matching token layout)")
        self.student_tap = _TokenTap(self.model.backbone.blocks, [p[0] for p in d.mimic])
        self.teacher_tap = _TokenTap(self.teacher.backbone.blocks, [p[1] for p in d.mimic])
        self.rate = 1.0
        self.model.train()

    def _build_student(self) -> MixFormerV2:
        cfg, d = self.cfg, self.cfg.distill
        if cfg.model.init_checkpoint:
            student = load_network(cfg.model.init_checkpoint)
            if student.config != cfg.model.network:
                raise ConfigError(f"model.network must describe the student in model.init_checkpoint "
                                  f"({student.config}); it says {cfg.model.network}")
            if d.student_mlp_ratio is not None and d.student_mlp_ratio != student.config.mlp_ratio:
                # The reduction is applied to the teacher's weights; a given student file is taken as it is.
                raise ConfigError(f"distill.student_mlp_ratio {d.student_mlp_ratio} applies when the student starts "
                                  f"from the teacher; the student in model.init_checkpoint has MLP ratio "
                                  f"{student.config.mlp_ratio} (reduce it there, or drop one of the two settings)")
            return student
        if d.init_from_teacher and self.cfg.teacher.kind == "mixformerv2":
            sd, net_cfg = self.teacher.state_dict(), self.teacher.config
            if d.student_mlp_ratio is not None and d.student_mlp_ratio != net_cfg.mlp_ratio:
                try:
                    sd, net_cfg = reduce_mlp(sd, net_cfg, d.student_mlp_ratio)
                except ValueError as exc:
                    raise ConfigError(f"distill.student_mlp_ratio: {exc}") from exc
            sizes = {"template_size": cfg.model.network.template_size, "search_size": cfg.model.network.search_size}
            if any(getattr(net_cfg, k) != v for k, v in sizes.items()):
                # A smaller input (e.g. B at 288 -> S at 224): same weights, new fixed position tables.
                net_cfg = MixFormerV2Config(**{**net_cfg.to_dict(), **sizes})
                fresh = build_mixformerv2(net_cfg).state_dict()
                sd = {**sd, **{k: fresh[k] for k in ("backbone.pos_embed_s", "backbone.pos_embed_t")}}
            if net_cfg != cfg.model.network:
                differ = "; ".join(f"{k}: teacher gives {v}, config says {getattr(cfg.model.network, k)}"
                                   for k, v in net_cfg.to_dict().items() if getattr(cfg.model.network, k) != v)
                raise ConfigError("model.network must describe the student the teacher gives before elimination "
                                  f"(the teacher's shape with distill.student_mlp_ratio and the crop sizes): {differ}")
            student = build_mixformerv2(net_cfg)
            load_weights(student, sd, "teacher")
            return student
        student = build_mixformerv2(cfg.model.network)
        if d.init_from_teacher:
            # Dense-to-sparse: the student keeps the teacher's backbone; only the token heads start fresh.
            if self.teacher.config != student.config:
                raise ConfigError(f"init_from_teacher needs the same backbone shape: teacher {self.teacher.config}, "
                                  f"student {student.config}")
            student.backbone.load_state_dict(self.teacher.backbone.state_dict(), strict=True)
        return student

    def to(self, device):
        self.teacher.to(device)
        return super().to(device)

    def set_progress(self, progress):
        if self.decaying:
            d = self.cfg.distill
            self.rate = elimination_rate(progress, d.decay_start, d.decay_end, d.decay_shape)
            set_residual_scale(self.decaying, self.rate)

    def loss(self, net, batch, device):
        w = self.cfg.loss
        t, ot, s = normalise(batch, device)
        with torch.no_grad():
            teacher_in = (t, ot, s)
            if self.resize_for_teacher:
                # Same crop region at the teacher's resolution; bins are normalised, so they still line up.
                tc = self.teacher.config
                sizes = (tc.template_size, tc.template_size, tc.search_size)
                teacher_in = tuple(F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
                                   for x, n in zip(teacher_in, sizes))
            t_out = self.teacher(*teacher_in)
        attention_tap(self)
        out = net(t, ot, s)
        gt = batch["search_box"].to(device)
        loss, stats = box_losses(out["pred_boxes"][:, 0].float(), gt, self.cfg, out["side_logits"])
        loss = attention_guidance(self, gt, loss, stats)
        if w.kl > 0:
            kl = side_distribution_kl(out["side_logits"].float(), {k: v.float() for k, v in t_out.items() if k.startswith("prob_")})
            loss = loss + w.kl * kl
            stats["kl"] = kl.item()
        if self.cfg.distill.mimic and w.feature > 0:
            feat = sum(
                feature_mimic_loss(self.student_tap.outputs[si].float(), self.teacher_tap.outputs[ti].float())
                for si, ti in self.cfg.distill.mimic
            ) / len(self.cfg.distill.mimic)
            loss = loss + w.feature * feat
            stats["feature"] = feat.item()
        stats["elimination_rate"] = self.rate
        return loss, stats

    def file_fields(self):
        # Mid-elimination the file holds the unpruned student with decaying layers: not a tracker network.
        return {"format": DISTILL_ELIMINATING_FORMAT} if self.decaying else {}

    def export(self):
        """The student with the eliminated layers dropped and the rest renumbered."""
        if not self.decaying:
            return self.model, {}
        if self.rate != 0.0:
            log.warning("exporting with elimination rate %.3f > 0: the pruned network differs from the trained one",
                        self.rate)
        keep = [i for i in range(self.model.config.depth) if i not in set(self.cfg.distill.eliminate)]
        sd, net_cfg = prune_layers(self.model.state_dict(), self.model.config, keep)
        pruned = build_mixformerv2(net_cfg)
        load_weights(pruned, {k: v.detach().cpu() for k, v in sd.items()}, "pruned student")
        return pruned, {"eliminated_layers": list(self.cfg.distill.eliminate)}


class ScoreTask(Task):
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.model = load_network(cfg.model.init_checkpoint)
        _freeze(self.model)
        for p in self.model.score_head.parameters():
            p.requires_grad_(True)
        # Frozen backbone and box head stay in eval mode; only the score head trains.
        self.model.eval()
        self.model.score_head.train()

    def loss(self, net, batch, device):
        t, ot, s = normalise(batch, device)
        out = net(t, ot, s)
        labels = batch["label"].to(device)
        loss = self.cfg.loss.score * score_loss(out["pred_scores"].float(), labels)
        acc = ((out["pred_scores"] > 0).float() == labels).float().mean()
        return loss, {"bce": loss.item() / max(self.cfg.loss.score, 1e-12), "score_acc": acc.item()}


def build_task(cfg: TrainConfig) -> Task:
    task = {"train": SupervisedTask, "distill": DistillTask, "score": ScoreTask}[cfg.stage](cfg)
    # The layers the attention guidance taps, counted in the network actually built (a distill
    # student's depth comes from its teacher, a fine-tune's from model.init_checkpoint).
    depth = len(task.model.backbone.blocks)
    if not all(-depth <= i < depth for i in cfg.loss.attention_layers):
        who = "student" if cfg.stage == "distill" else "network"
        raise ConfigError(f"loss.attention_layers {cfg.loss.attention_layers} must index the {who}'s {depth} layers "
                          f"(-{depth} to {depth - 1})")
    net, crop = task.model.config, cfg.data.crop
    if (net.template_size, net.search_size) != (crop.template_size, crop.search_size):
        raise ConfigError(f"the network takes {net.template_size}/{net.search_size} px template/search crops "
                          f"(model.init_checkpoint?), data.crop gives {crop.template_size}/{crop.search_size}")
    return task
