"""PyTorch backend: templates encoded once per update, only search tokens run per frame."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..model import MixFormerV2
from ..tracking.backend import run_once_on_blank_crops
from ..tracking.preprocessing import IMAGENET_MEAN, IMAGENET_STD

# fp16 is for CUDA. bf16 also pays on CPUs with bf16 instructions (avx512_bf16, AMX): the backbone
# is stored in that dtype (autocast would cast every weight again on each call: 1.5x slower on the
# cached path of S on a Sapphire Rapids core), the heads stay fp32 since they turn four tokens into
# bin distributions and the score. torch.compile was no faster than eager (bench/torch_cpu_options.py).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Normalize(nn.Module):
    """uint8 (B, H, W, 3) RGB crops -> float (B, 3, H, W), (x / 255 - mean) / std: the tracker's
    preprocessing on tensors (the backend, the exported graphs and training all use this one)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
        return (x / 255.0 - self.mean) / self.std


def resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available in this PyTorch build/machine")
    return dev


class TorchBackend:
    name = "torch"

    def __init__(self, model: MixFormerV2, device: str = "cpu", precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        self._device = resolve_device(device)
        self.device = str(self._device)
        self.precision = precision
        self._dtype = PRECISIONS[precision]
        if self._dtype != torch.float32:
            model = copy.deepcopy(model)  # the caller's network stays fp32
        self.model = model.to(self._device).eval()
        self.model.backbone.to(self._dtype)
        self._normalize = Normalize().to(self._device)
        self._template_kv: torch.Tensor | None = None
        run_once_on_blank_crops(self, model.config.template_size, model.config.search_size)
        self._template_kv = None

    def _to_input(self, *crops: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) crops -> normalised (N, 3, H, W) float32 on the device (uint8 crosses the bus)."""
        batch = torch.from_numpy(np.stack(crops))  # (N, H, W, 3) uint8
        if self._device.type == "cuda":
            batch = batch.pin_memory().to(self._device, non_blocking=True)
        return self._normalize(batch).to(self._dtype)

    @torch.inference_mode()
    def set_templates(self, template: np.ndarray, online_template: np.ndarray) -> None:
        t, ot = self._to_input(template, online_template)
        self._template_kv = self.model.encode_templates(t[None], ot[None])

    @torch.inference_mode()
    def predict(self, search: np.ndarray) -> tuple[np.ndarray, float]:
        if self._template_kv is None:
            raise RuntimeError("predict() before set_templates()")
        tokens = self.model.backbone.forward_search(self._to_input(search), self._template_kv)
        out = self.model.heads(tokens.float())
        return out["pred_boxes"].reshape(4).cpu().numpy(), float(out["pred_scores"].item())
