"""ONNX Runtime backend: the exported template encoder runs once per template update, the predictor every frame.

Threading is set on purpose, because on a small CPU two busy pools in one process (ORT and torch,
or two ORT sessions) spin against each other and can make every matmul several times slower:

* the predictor's intra-op pool has ``num_threads`` threads, no inter-op pool; its workers
  spin between the ops of one run (waking a sleeping worker for each of the graph's ~100 ops cost
  ~10 % of a step) but stop spinning when the run returns (``session.force_spinning_stop``), so
  between frames they sleep instead of burning the cores where the tracker crops the next frame;
* the encoder gets a pool of the same size by default (``encoder_threads``). Since both pools
  stop spinning when their run returns and the two sessions run one after the other on the same
  thread, the second pool costs the predictor nothing measurable, and it halves the time of a
  template update, the one frame in ``update_interval`` that runs both graphs.

The template keys/values stay an ``OrtValue`` between frames (on the GPU for CUDA/TensorRT) and
are bound with IOBinding, so they are not converted or copied again each frame.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..model import MixFormerV2
from ..tracking.backend import run_once_on_blank_crops
from .export import GRAPH_FILES, MANIFEST, PRECISIONS, cached_export, weights_hash

log = logging.getLogger(__name__)
EXPORT_COMMAND = "python -m mixformer_ros.backends.export"


class OnnxModelError(RuntimeError):
    """An ONNX export folder or graph that is missing, corrupt, or does not fit the tracker."""


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def execution_providers(device: str, engine_cache: Path | None = None, fp16: bool = False) -> tuple[list, str, int]:
    """ORT providers for ``device`` ("cpu", "cuda", "cuda:1"), best first; also (ort device type, device id).

    On CUDA, TensorRT goes first when the installed onnxruntime has it, with its engines cached in
    ``engine_cache`` (building them takes minutes, so only the first start pays); CUDA runs
    whatever TensorRT does not take; the CPU provider is the last resort for odd ops.
    """
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    available = ort.get_available_providers()
    if kind == "cpu":
        return ["CPUExecutionProvider"], "cpu", 0
    if kind != "cuda":
        raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    device_id = int(index or 0)
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider (available: {available}); "
            "install onnxruntime-gpu in place of onnxruntime"
        )
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        trt = {"device_id": device_id, "trt_fp16_enable": fp16}
        if engine_cache is not None:
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
        providers.append(("TensorrtExecutionProvider", trt))
    providers += [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return providers, "cuda", device_id


def session_options(threads: int):
    """Options of every ORT session this package opens: ``threads`` intra-op threads, no inter-op pool,
    workers that spin only while a run is in progress (see the module docstring)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3  # errors only; ORT warns about every CPU fallback node otherwise
    return opts


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise OnnxModelError(f"ONNX model folder not found: {folder} (make one with {EXPORT_COMMAND})")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise OnnxModelError(f"{folder} has no {MANIFEST}; it is not a mixformer_ros ONNX export") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise OnnxModelError(f"{path} is unreadable or corrupt: {exc}") from exc
    if not isinstance(manifest, dict) or "config" not in manifest:
        raise OnnxModelError(f"{path} is not a mixformer_ros export manifest")
    return manifest


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_model: str | os.PathLike, device: str = "cpu", num_threads: int | None = None,
                 encoder_threads: int | None = None):
        """``onnx_model``: a folder written by ``mixformer_ros.backends.export``
        (encoder.onnx, predictor.onnx, manifest.json)."""
        import onnxruntime as ort

        folder = Path(onnx_model)
        self.manifest = read_manifest(folder)
        self.precision = self.manifest.get("precision", "fp32")
        self.device = device
        engine_cache = folder / "tensorrt_engines" if os.access(folder, os.W_OK) else None
        providers, self._ort_device, self._device_id = execution_providers(
            device, engine_cache, fp16=self.precision == "fp16")
        threads = num_threads if num_threads is not None else available_threads()
        encoder_threads = threads if encoder_threads is None else encoder_threads
        if threads < 1 or encoder_threads < 1:
            raise ValueError(f"num_threads and encoder_threads must be >= 1, got {threads}, {encoder_threads}")
        self.num_threads = threads
        self._encoder = self._session(ort, folder, "encoder", providers, encoder_threads)
        self._predictor = self._session(ort, folder, "predictor", providers, threads)
        self._check_interface()
        self._binding = self._predictor.io_binding()
        config = self.manifest["config"]
        run_once_on_blank_crops(self, config["template_size"], config["search_size"])
        self._template_kv = None  # OrtValue, resident on the session's device
        log.info("ONNX Runtime %s graphs from %s on %s (providers %s), predictor %d thread(s), encoder %d",
                 self.precision, folder, device, self._predictor.get_providers(), threads, encoder_threads)

    @staticmethod
    def _session(ort, folder: Path, kind: str, providers: list, threads: int):
        path = folder / GRAPH_FILES[kind]
        if not path.is_file():
            raise OnnxModelError(f"{path} is missing; re-export the folder with {EXPORT_COMMAND}")
        try:
            return ort.InferenceSession(str(path), session_options(threads), providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf classes
            raise OnnxModelError(f"ONNX Runtime cannot load {path} (corrupt or not an ONNX graph?): {exc}") from exc

    def _check_interface(self) -> None:
        want = {self._encoder: (["template", "online_template"], ["template_kv"]),
                self._predictor: (["search", "template_kv"], ["pred_boxes", "pred_scores"])}
        for sess, (inputs, outputs) in want.items():
            got = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
            if got != (inputs, outputs):
                raise OnnxModelError(f"graph interface {got} differs from the expected {(inputs, outputs)}")
        for node in self._encoder.get_inputs() + self._predictor.get_inputs()[:1]:
            if node.type != "tensor(uint8)":
                raise OnnxModelError(f"input {node.name} is {node.type}; this backend feeds uint8 NHWC crops")

    @classmethod
    def from_model(cls, model: MixFormerV2, device: str = "cpu", precision: str = "fp32",
                   onnx_model: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   num_threads: int | None = None, encoder_threads: int | None = None,
                   verify_weights: bool = True, trained_crop: dict[str, float] | None = None) -> "OnnxRuntimeBackend":
        """Use ``onnx_model`` when given (its config, and with ``verify_weights`` its weights, must
        match ``model``'s); otherwise export ``model`` into the cache (keyed by weights, config,
        opset and precision) once and load that. ``verify_weights=False`` is for a ``model`` that
        only carries the shape, the ONNX folder being the weights' only source. ``trained_crop``
        goes into a cache folder's manifest (see ``export_model``)."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} for onnxruntime; expected one of {list(PRECISIONS)}")
        on_cpu = device.partition(":")[0] == "cpu"
        if precision == "int8" and not on_cpu:
            raise ValueError("int8 (dynamic quantisation) is a CPU path; use fp16 or fp32 on CUDA")
        if precision == "fp16" and on_cpu:
            raise ValueError("fp16 graphs are for CUDA/TensorRT; on the CPU use fp32 or int8")
        execution_providers(device)  # an unusable device fails now, not after a minute of export

        def load(folder):
            return cls(folder, device=device, num_threads=num_threads, encoder_threads=encoder_threads)

        # A cache folder is found by the weights' hash: only a folder given by the caller needs its
        # weights checked.
        check_weights = verify_weights and onnx_model is not None
        if onnx_model is None:
            onnx_model = cached_export(model, precision=precision, cache_dir=cache_dir, trained_crop=trained_crop)
            try:
                backend = load(onnx_model)
            except OnnxModelError as exc:  # e.g. a graph truncated by a power cut: the cache is ours to redo
                log.warning("cached export %s does not load (%s); exporting it again", onnx_model, exc)
                shutil.rmtree(onnx_model, ignore_errors=True)
                onnx_model = cached_export(model, precision=precision, cache_dir=cache_dir, trained_crop=trained_crop)
                backend = load(onnx_model)
        else:
            backend = load(onnx_model)
        manifest = backend.manifest
        if manifest["config"] != model.config.to_dict():
            raise OnnxModelError(
                f"{onnx_model} was exported for {manifest['config']}, but the tracker's network is "
                f"{model.config.to_dict()}; export this checkpoint instead"
            )
        if check_weights and "weights_sha256" in manifest and manifest["weights_sha256"] != weights_hash(
                model, backend.precision, manifest.get("opset"), manifest.get("torch")):
            raise OnnxModelError(
                f"{onnx_model} was exported from other weights than the tracker's checkpoint; export this "
                f"checkpoint ({EXPORT_COMMAND}), or leave onnx_model empty to export it into the cache"
            )
        if backend.precision != precision:
            log.warning("%s holds %s graphs; precision=%r is ignored", onnx_model, backend.precision, precision)
        return backend

    def _check_crop(self, crop: np.ndarray, name: str) -> np.ndarray:
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) array, got {getattr(crop, 'dtype', type(crop))} "
                             f"{getattr(crop, 'shape', '')}")
        return np.ascontiguousarray(crop[None])  # (1, H, W, 3)

    def set_templates(self, template: np.ndarray, online_template: np.ndarray) -> None:
        binding = self._encoder.io_binding()
        binding.bind_cpu_input("template", self._check_crop(template, "template"))
        binding.bind_cpu_input("online_template", self._check_crop(online_template, "online_template"))
        # Left on the device the predictor runs on: no host round trip for the KV on a GPU.
        binding.bind_output("template_kv", self._ort_device, self._device_id)
        self._encoder.run_with_iobinding(binding)
        binding.synchronize_outputs()  # the KV must be complete before another session's stream reads it
        self._template_kv = binding.get_outputs()[0]

    def predict(self, search: np.ndarray) -> tuple[np.ndarray, float]:
        if self._template_kv is None:
            raise RuntimeError("predict() before set_templates()")
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        b.bind_cpu_input("search", self._check_crop(search, "search"))
        b.bind_ortvalue_input("template_kv", self._template_kv)
        b.bind_output("pred_boxes")  # small outputs come back to the host
        b.bind_output("pred_scores")
        self._predictor.run_with_iobinding(b)
        boxes, scores = b.copy_outputs_to_cpu()
        return boxes.reshape(4).astype(np.float32), float(scores.reshape(-1)[0])
