"""PyTorch backend: templates encoded once per update, only search tokens run per frame."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..model import MixFormerV2
from ..tracking.preprocessing import IMAGENET_MEAN, IMAGENET_STD

# fp16 is for CUDA. bf16 also pays on CPUs with bf16 instructions: on the project's Zen 5
# (avx512_bf16) autocast ran the cached path ~2.4x faster than fp32 with boxes within ~4e-4 of the
# crop, while torch.compile was no faster than eager (bench/torch_cpu_options.py), so eager it is.
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        self.model = model.to(self._device).eval()
        self._normalize = Normalize().to(self._device)
        self._template_kv: torch.Tensor | None = None

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self._device.type, dtype=dtype, enabled=dtype is not None)

    def _to_input(self, *crops: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) crops -> normalised (N, 3, H, W) float32 on the device (uint8 crosses the bus)."""
        batch = torch.from_numpy(np.stack(crops))  # (N, H, W, 3) uint8
        if self._device.type == "cuda":
            batch = batch.pin_memory().to(self._device, non_blocking=True)
        return self._normalize(batch)

    @torch.inference_mode()
    def set_templates(self, template: np.ndarray, online_template: np.ndarray) -> None:
        t, ot = self._to_input(template, online_template)
        with self._autocast():
            self._template_kv = self.model.encode_templates(t[None], ot[None])

    @torch.inference_mode()
    def predict(self, search: np.ndarray) -> tuple[np.ndarray, float]:
        if self._template_kv is None:
            raise RuntimeError("predict() before set_templates()")
        with self._autocast():
            out = self.model.forward_search(self._to_input(search), self._template_kv)
        box = out["pred_boxes"].reshape(4).float().cpu().numpy()
        return box, float(out["pred_scores"].float().item())
