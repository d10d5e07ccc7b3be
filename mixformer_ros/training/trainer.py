"""The training loop: data, DDP, mixed precision, clipping, resumable checkpoints, logging.

Runs the same on one CPU process and under ``torchrun`` on many GPUs. Sample ``i`` of epoch ``e``
is drawn from a generator seeded by (seed, e, i), and each process takes its share of the same
shuffled index list, so the global batch - and with it the result - does not depend on the
number of processes, and a resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from mixformer_ros.model import CheckpointError, read_checkpoint, save_checkpoint

from .config import ConfigError, TrainConfig
from .data import (COCOReader, GOT10kReader, LaSOTReader, OTBReader, PairDataset, PairSampler,
                   SyntheticDataset, TrackingNetReader)
from .stages import Task, build_task

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoints/last.pth.tar"
FINAL_CHECKPOINT = "model.pth.tar"


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistEnv:
    """Join the process group torchrun (or a test) described in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def held_interrupts():
    """Hold Ctrl-C (SIGINT) back while the block runs; yields a list that receives the signal, for
    the block to stop at a point of its choosing.

    A training step cut in half leaves BatchNorm statistics or the optimizer one batch ahead of
    the step counter, and the resumed run would apply that batch twice; under DDP every rank must
    stop after the same step. A second Ctrl-C while holding goes through at once (a hung step can
    still be stopped).
    """
    previous = signal.getsignal(signal.SIGINT)
    received: list[int] = []
    # Signals reach only the main thread; an ignored SIGINT (`cmd &` in a script) stays ignored; a
    # handler installed outside Python (None) could not be put back.
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield received
        return

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


# Settings that change what a run logs or keeps, not what it trains: a resume may change them.
RESUMABLE_CHANGES = ("output_dir", "log_every", "checkpoint_every", "tensorboard", "data.num_workers")


def changed_settings(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings whose values differ between two config dicts (those in
    RESUMABLE_CHANGES, and those only one of them has, from another version, excepted)."""
    changed = []
    for key in sorted(set(recorded) & set(current)):
        name = f"{prefix}{key}"
        if name in RESUMABLE_CHANGES:
            continue
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_settings(old, new, f"{name}.")
        elif old != new:
            changed.append(name)
    return changed


def release_distributed() -> None:
    """Leave the process group before the interpreter exits. Left to the exit handlers, gloo's
    threads can be torn down unjoined and abort the rank (SIGABRT, "terminate called without an
    active exception") after its work is done."""
    if dist.is_initialized():
        dist.destroy_process_group()


def build_datasets(cfg: TrainConfig) -> tuple[list, list[float]]:
    """The readers and sampling weights named by the config (paths were checked by validate)."""
    datasets, weights = [], []
    for spec in cfg.data.datasets:
        if spec.type == "otb":
            ds = OTBReader(spec.root, spec.sequences)
        elif spec.type == "got10k":
            ds = GOT10kReader(spec.root, spec.split or "train", spec.sequences)
        elif spec.type == "lasot":
            ds = LaSOTReader(spec.root, spec.sequences)
        elif spec.type == "trackingnet":
            ds = TrackingNetReader(spec.root, spec.chunks, spec.sequences)
        else:
            ds = COCOReader(spec.root, spec.split or "train2017")
        datasets.append(ds)
        weights.append(spec.weight)
    if cfg.data.synthetic is not None:
        datasets.append(SyntheticDataset(cfg.data.synthetic))
        weights.append(cfg.data.synthetic_weight)
    return datasets, weights


class _RunSampler(Sampler):
    """This process's indices for training steps `start_step` to `end_step`, epoch after epoch
    (PairDataset's run-wide indices), so one DataLoader serves the whole run and its workers keep
    their sequence caches.

    Each epoch is DistributedSampler's shuffle for that epoch, cut to whole batches.
    """

    def __init__(self, samples_per_epoch: int, world_size: int, rank: int, seed: int, batch_size: int,
                 start_step: int = 0, end_step: int = 0):
        self.epoch_order = DistributedSampler(range(samples_per_epoch), num_replicas=world_size, rank=rank,
                                              shuffle=True, seed=seed, drop_last=True)
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.steps_per_epoch = len(self.epoch_order) // batch_size
        self.start_step = start_step
        self.end_step = end_step

    def __iter__(self):
        step = self.start_step
        while step < self.end_step:
            epoch, done = divmod(step, self.steps_per_epoch)
            stop = min(self.steps_per_epoch, done + self.end_step - step)
            self.epoch_order.set_epoch(epoch)
            order = list(self.epoch_order)[done * self.batch_size:stop * self.batch_size]
            yield from (epoch * self.samples_per_epoch + i for i in order)
            step += stop - done

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.batch_size


def _worker_init(_worker_id: int) -> None:
    """Data workers decode and crop; one thread each keeps them from fighting the training step."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _lr_factor(step: int, total: int, cfg) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 0.1 if step >= cfg.lr_drop * total else 1.0


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str = "auto", resume: bool = True, max_steps: int | None = None):
        self.cfg = cfg
        kind = "cuda" if (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda") else "cpu"
        self.env = init_distributed(kind)
        self.device = torch.device(f"cuda:{self.env.local_rank}" if kind == "cuda" else "cpu")
        if kind == "cuda":
            torch.cuda.set_device(self.device)
        torch.manual_seed(cfg.seed)
        self.out_dir = Path(cfg.output_dir)
        self.max_steps = max_steps

        self.task: Task = build_task(cfg).to(self.device)
        loaded = self.task.model.config
        if cfg.stage != "distill" and cfg.model.init_checkpoint and loaded != cfg.model.network:
            # The network comes from the file: record that one, not the config's unused model.network.
            log.info("model.network is taken from %s: %s", cfg.model.init_checkpoint, loaded)
            cfg = self.cfg = replace(cfg, model=replace(cfg.model, network=loaded))
        params = self.task.trainable_parameters()
        if not params:
            raise ConfigError("nothing to train: every parameter is frozen")
        self.net = self.task.model
        if self.env.world_size > 1:
            self.net = DistributedDataParallel(self.task.model, device_ids=[self.device.index] if kind == "cuda" else None)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

        datasets, weights = build_datasets(cfg)
        sampler_cfg = cfg.data.sampler
        self.dataset = PairDataset(PairSampler(datasets, weights, sampler_cfg), cfg.data.crop,
                                   cfg.data.samples_per_epoch, cfg.seed)
        self.steps_per_epoch = self._sampler().steps_per_epoch
        if self.steps_per_epoch < 1:
            raise ConfigError("data.samples_per_epoch / (processes * optim.batch_size) < 1: no full batch per epoch")
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.stage == "distill" and cfg.distill.eliminate and \
                (self.total_steps - 1) / self.total_steps < cfg.distill.decay_end:
            # The last step trains at progress (T-1)/T: a later decay_end exports layers that never reached 0.
            raise ConfigError(f"distill.decay_end {cfg.distill.decay_end} is not reached within the run's "
                              f"{self.total_steps} steps; the removed layers must decay to 0 before the last step")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, self.total_steps, cfg.optim))

        amp_on = cfg.optim.amp == "on" or (cfg.optim.amp == "auto" and kind == "cuda")
        self.amp_dtype = None
        if amp_on:
            self.amp_dtype = torch.bfloat16 if (kind == "cpu" or torch.cuda.is_bf16_supported()) else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.global_step = 0
        self.skipped_frames = 0
        self.writer = None
        self._tensorboard = cfg.tensorboard
        if resume:
            self._maybe_resume()

    def _param_groups(self) -> list[dict]:
        """Heads at the base learning rate, the backbone at base * backbone_lr_scale."""
        backbone, heads = [], []
        for name, p in self.task.model.named_parameters():
            if p.requires_grad:
                (backbone if name.startswith("backbone.") else heads).append(p)
        groups = [{"params": heads, "lr": self.cfg.optim.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": self.cfg.optim.lr * self.cfg.optim.backbone_lr_scale})
        return [g for g in groups if g["params"]]

    # ----- checkpoints -------------------------------------------------------------------------
    def _state_extra(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "global_step": self.global_step,
            "skipped_frames": self.skipped_frames,
            "training": self.cfg.to_dict(),
        }

    def save_resumable(self) -> None:
        if self.env.is_main:
            save_checkpoint(self.out_dir / LAST_CHECKPOINT, self.task.model, **self._state_extra(),
                            **self.task.file_fields())

    def _maybe_resume(self) -> None:
        path = self.out_dir / LAST_CHECKPOINT
        if not path.is_file():
            return
        state_dict, _, extra = read_checkpoint(path)
        changed = changed_settings(extra.get("training", {}), self.cfg.to_dict())
        if changed:
            # The optimizer, schedule and step count come from the checkpoint: a changed setting would
            # be ignored while the exported file recorded it.
            raise ConfigError(f"{path} was written with other settings ({', '.join(changed)}); resume with the "
                              "same config, or use a new output_dir or --no-resume to train with these")
        try:
            self.task.model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} is from a run with another network; use a new output_dir or --no-resume "
                                  f"to start over ({str(exc).splitlines()[0]})") from exc
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.scaler.load_state_dict(extra["scaler"])
        self.global_step = int(extra["global_step"])
        self.skipped_frames = int(extra.get("skipped_frames", 0))
        log.info("resumed from %s at step %d/%d", path, self.global_step, self.total_steps)

    def save_final(self) -> Path:
        path = self.out_dir / FINAL_CHECKPOINT
        if self.env.is_main:
            model, extra = self.task.export()
            save_checkpoint(path, model, training=self.cfg.to_dict(), global_step=self.global_step,
                            skipped_frames=self.skipped_frames, **extra)
            log.info("saved %s", path)
            if self.cfg.stage == "distill":
                # Frozen while distilling, the head still reads features the student no longer
                # computes: the 2-layer demo student's scores were at chance until re-fitted.
                log.warning("%s keeps a score head that was not fitted to its own features: run the score stage "
                            "on it (model.init_checkpoint=%s) before tracking with it", path, path)
        return path

    # ----- loop --------------------------------------------------------------------------------
    def _log(self, stats: dict) -> None:
        if not self.env.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.global_step, **stats}) + "\n")
        if self.writer is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed; logging to metrics.jsonl only")
                self._tensorboard = False
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        if self.writer is not None:
            for k, v in stats.items():
                self.writer.add_scalar(f"{self.cfg.stage}/{k}", v, self.global_step)

    def train_step(self, batch: dict) -> dict:
        self.task.set_progress(self.global_step / self.total_steps)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss, stats = self.task.loss(self.net, batch, self.device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.global_step}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.task.trainable_parameters(),
                                                                      self.cfg.optim.grad_clip_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        stats["loss"] = loss.item()
        stats["lr"] = self.scheduler.get_last_lr()[0]
        return stats

    def _skipped_in(self, batch: dict) -> int:
        """Unreadable frames met while drawing this step's samples, summed over all processes."""
        skipped = batch.pop("skipped").sum().to(self.device)
        if self.env.world_size > 1:
            dist.all_reduce(skipped)
        return int(skipped)

    def _sampler(self, start_step: int = 0, end_step: int = 0) -> _RunSampler:
        return _RunSampler(self.cfg.data.samples_per_epoch, self.env.world_size, self.env.rank, self.cfg.seed,
                           self.cfg.optim.batch_size, start_step, end_step)

    def _loader(self, start_step: int, end_step: int) -> DataLoader:
        """The batches of steps `start_step` to `end_step`, in one loader (workers live through it)."""
        workers = self.cfg.data.num_workers
        return DataLoader(self.dataset, batch_size=self.cfg.optim.batch_size, sampler=self._sampler(start_step, end_step),
                          num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda",
                          worker_init_fn=_worker_init, prefetch_factor=4 if workers else None,
                          # Spawned, not forked: a fork of a process whose thread pools (OpenMP, ONNX
                          # Runtime, rclpy) are running can deadlock in the child. Paid once per run.
                          multiprocessing_context="spawn" if workers else None)

    def run(self) -> Path:
        """Train to the end (or max_steps), checkpointing as it goes; returns the final checkpoint path."""
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        end = self.total_steps if self.max_steps is None else min(self.total_steps, self.max_steps)
        bar = tqdm(total=end, initial=self.global_step, disable=not self.env.is_main, desc=self.cfg.stage,
                   dynamic_ncols=True)
        t0, running, count = time.time(), {}, 0
        saved_step = self.global_step if self.global_step > 0 else None  # a resumed run's file holds this step
        try:
            # A run that is already at its end starts no data workers.
            batches = self._loader(self.global_step, end) if self.global_step < end else ()
            with held_interrupts() as interrupted:
                for batch in batches:
                    epoch = self.global_step // self.steps_per_epoch
                    self.skipped_frames += self._skipped_in(batch)
                    stats = self.train_step(batch)
                    for k, v in stats.items():
                        running[k] = running.get(k, 0.0) + v
                    count += 1
                    bar.update(1)
                    if self.global_step % self.cfg.log_every == 0 or self.global_step == end:
                        avg = {k: v / count for k, v in running.items()}
                        avg.update(epoch=epoch, skipped_frames=self.skipped_frames, elapsed_s=time.time() - t0)
                        self._log(avg)
                        bar.set_postfix(loss=f"{avg['loss']:.3f}", iou=f"{avg.get('iou', float('nan')):.2f}")
                        running, count = {}, 0
                    if (self.global_step % self.cfg.checkpoint_every == 0
                            or self.global_step % self.steps_per_epoch == 0 or self.global_step == end):
                        self.save_resumable()
                        saved_step = self.global_step
                    if self._any_rank(bool(interrupted)):
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if saved_step == self.global_step:
                log.warning("interrupted at step %d, which %s holds", self.global_step, LAST_CHECKPOINT)
            else:
                log.warning("interrupted at step %d; saving a resumable checkpoint", self.global_step)
                self.save_resumable()
            raise
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if self.global_step >= self.total_steps:
            return self.save_final()
        return self.out_dir / LAST_CHECKPOINT

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank: a Ctrl-C or SIGTERM that reached some ranks during a
        step stops them all after it (a rank going on alone would wait in the next all-reduce)."""
        if self.env.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)  # NCCL reduces only CUDA tensors
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
