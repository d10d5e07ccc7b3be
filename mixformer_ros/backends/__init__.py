"""Network runners behind the tracker's Backend protocol (no ROS imports)."""
from __future__ import annotations

from ..model import MixFormerV2

BACKEND_NAMES = ("torch", "onnxruntime")


def create_backend(name: str, model: MixFormerV2, device: str = "cpu", precision: str = "fp32", **options):
    """Instantiate a backend by name; ``options`` are backend specific (e.g. onnx_model, cache_dir, num_threads)."""
    if name == "torch":
        from .torch_backend import TorchBackend

        if options:
            raise ValueError(f"options {sorted(options)} do not apply to the torch backend")
        return TorchBackend(model, device=device, precision=precision)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend.from_model(model, device=device, precision=precision, **options)
    raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKEND_NAMES)}")
