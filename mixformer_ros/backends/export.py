"""ONNX export of MixFormerV2: the cached path (template encoder + per-frame predictor) and the full path.

Every graph takes uint8 RGB crops in NHWC layout, exactly what the tracker produces, and does the
ImageNet normalisation itself, so the runtime never touches float pixels in Python and only a
quarter of the bytes cross into the session (or over the bus on a GPU).

Graphs written into one folder (names, shapes and the manifest are documented in docs/backends.md):

* ``encoder.onnx``   template (B,T,T,3) u8, online_template (B,T,T,3) u8 -> template_kv (depth,2,B,heads,2*Nt,hd)
* ``predictor.onnx`` search (B,S,S,3) u8, template_kv -> pred_boxes (B,4), pred_scores (B,)
* ``full.onnx``      template, online_template, search -> pred_boxes, pred_scores (the official joint pass)
* ``manifest.json``  config, opset, precision, weight hash and the measured parity against PyTorch.

Run ``python -m mixformer_ros.backends.export --help``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxscript
import torch
import torch.nn as nn

from ..files import replace_atomically
from ..model import MixFormerV2, load_model_and_record, trained_crop_factors, variant_config
from .torch_backend import Normalize

log = logging.getLogger(__name__)

OPSET = 20  # 20 has Gelu, which ONNX Runtime fuses with its bias add (18 spells it out with Erf)
# Bump when the graphs' interface or contents change, so cached exports are rebuilt.
EXPORT_FORMAT = "mixformer_ros-onnx/3"
GRAPH_FILES = {"encoder": "encoder.onnx", "predictor": "predictor.onnx", "full": "full.onnx"}
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "int8", "fp16")
ORT_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators
# Parity of an fp32 export against PyTorch (normalised box units); above it the export is refused.
FP32_BOX_TOLERANCE = 1e-4
# A temporary export folder older than this is left from a killed export (exports take minutes).
STALE_EXPORT_S = 3600


class ExportError(RuntimeError):
    """The export failed or its graphs disagree with PyTorch beyond the tolerance."""


def _contrib_attention():
    """ONNX Runtime's fused ``com.microsoft::Attention`` (version 1) as an onnxscript op.

    onnxscript emits only operators whose schema ONNX knows, and ONNX does not ship ONNX Runtime's
    contrib schemas, so this one is registered here (the inputs, outputs and attribute we use).
    """
    import onnx.defs
    from onnx.defs import OpSchema

    if not onnx.defs.has("Attention", ORT_DOMAIN):
        param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
        onnx.defs.register_schema(OpSchema(
            "Attention", ORT_DOMAIN, 1,
            inputs=[param("input", "T"), param("weights", "T"), param("bias", "T", param_option=optional),
                    param("mask_index", "M", param_option=optional), param("past", "T", param_option=optional)],
            outputs=[param("output", "T"), param("present", "T", param_option=optional)],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "", required=True)],
        ))
    return onnxscript.values.Opset(ORT_DOMAIN, 1).Attention


def _attend_to_cache_onnx(x, qkv_weight_t, qkv_bias, template_kv, num_heads: int):
    """``mixformer_ros::attend_to_cache`` as one fused Attention node: the cached template keys/values
    (2, B, heads, Nt, head_dim) are exactly its ``past`` input, and nothing is masked."""
    output, _present = _contrib_attention()(x, qkv_weight_t, qkv_bias, None, template_kv, num_heads=num_heads)
    return output


class EncoderGraph(nn.Module):
    def __init__(self, model: MixFormerV2):
        super().__init__()
        self.model, self.norm = model, Normalize()

    def forward(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        return self.model.encode_templates(self.norm(template), self.norm(online_template))


class PredictorGraph(nn.Module):
    def __init__(self, model: MixFormerV2):
        super().__init__()
        self.model, self.norm = model, Normalize()

    def forward(self, search: torch.Tensor, template_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_search(self.norm(search), template_kv)
        return out["pred_boxes"][:, 0], out["pred_scores"]  # (B, 4), (B,)


class FullGraph(nn.Module):
    def __init__(self, model: MixFormerV2):
        super().__init__()
        self.model, self.norm = model, Normalize()

    def forward(self, template, online_template, search) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(self.norm(template), self.norm(online_template), self.norm(search))
        return out["pred_boxes"][:, 0], out["pred_scores"]  # (B, 4), (B,)


@dataclass(frozen=True)
class GraphSpec:
    module: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


GRAPH_SPECS = {
    "encoder": GraphSpec(EncoderGraph, ("template", "online_template"), ("template_kv",)),
    "predictor": GraphSpec(PredictorGraph, ("search", "template_kv"), ("pred_boxes", "pred_scores")),
    "full": GraphSpec(FullGraph, ("template", "online_template", "search"), ("pred_boxes", "pred_scores")),
}


def example_inputs(model: MixFormerV2, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic uint8 crops and the matching template keys/values, keyed by graph input name."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    crops = {
        name: torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8)
        for name, size in (("template", cfg.template_size), ("online_template", cfg.template_size),
                           ("search", cfg.search_size))
    }
    with torch.no_grad():
        crops["template_kv"] = EncoderGraph(model)(crops["template"], crops["online_template"])
    return crops


def weights_hash(model: MixFormerV2, precision: str, opset: int = OPSET, torch_version: str | None = None) -> str:
    """Key of an export: every tensor of the state_dict, the config, opset, precision and format/tool
    versions (this torch's unless ``torch_version`` names the exporting one, to check an older export)."""
    h = hashlib.sha256()
    meta = {"config": model.config.to_dict(), "opset": opset, "precision": precision, "format": EXPORT_FORMAT,
            "torch": torch_version or torch.__version__}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _export_graph(model: MixFormerV2, kind: str, path: Path, opset: int) -> None:
    spec = GRAPH_SPECS[kind]
    inputs = example_inputs(model, batch=2)
    args = tuple(inputs[name] for name in spec.inputs)
    batch = torch.export.Dim("batch", min=1, max=64)
    # template_kv carries the batch on axis 2: (depth, 2, B, heads, 2*Nt, head_dim).
    dynamic = tuple({2: batch} if name == "template_kv" else {0: batch} for name in spec.inputs)
    # The exporter's own chatter (deprecations, "torchvision is not installed") is not ours to fix.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                spec.module(model).eval(), args, dynamo=True, opset_version=opset, input_names=list(spec.inputs),
                output_names=list(spec.outputs), dynamic_shapes=dynamic, external_data=False, optimize=True,
                verbose=False,
                custom_translation_table={torch.ops.mixformer_ros.attend_to_cache.default: _attend_to_cache_onnx},
            )
    finally:
        registry_log.setLevel(level)
    # The exporter folds constants only up to small sizes; fold the weight slices too (the cached
    # path's last block projects queries and keys/values with parts of its qkv weight), so every
    # Linear is a MatMul on an initializer, which the int8 quantiser and ORT's fusions need.
    folding_limit = max(p.numel() for p in model.parameters())
    onnxscript.optimizer.optimize(program.model, input_size_limit=folding_limit, output_size_limit=folding_limit)
    program.save(str(path), external_data=False)


def _quantize_int8(src: Path, dst: Path, block_linears: int) -> None:
    """Dynamic int8 (per-channel int8 weights, activations quantised per call) for the transformer blocks' Linears,
    including the qkv projections inside fused Attention nodes (which become ``QAttention``).

    Left in fp32: the attention products (both operands are activations) and the four head
    Linears, whose outputs are the bin logits and the score; keeping them cut the box deviation
    of S about in half at no measurable cost, since the heads see only four tokens.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    weights = {init.name for init in graph.initializer}
    # Weight MatMuls in module order (the exporter keeps it): the blocks', then the box and score heads' 2 + 2.
    linears = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    attentions = [n.name for n in graph.node if n.op_type == "Attention" and n.domain == ORT_DOMAIN]
    if len(linears) + len(attentions) != block_linears + 4:
        raise ExportError(f"{src.name}: expected {block_linears + 4} Linears, found {len(linears)} MatMuls and "
                          f"{len(attentions)} fused attentions; the graph layout changed, so int8 would not know "
                          "which layers to keep in fp32")
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"], nodes_to_quantize=linears[:-4] + attentions)


def _convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and arithmetic inside, float32/uint8 at the graph boundary (for CUDA/TensorRT)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def parity_check(model: MixFormerV2, folder: Path, precision: str, kinds=tuple(GRAPH_FILES)) -> dict:
    """Runs the exported graphs in ONNX Runtime (CPU) against PyTorch on the same uint8 inputs.

    Returns the max absolute deviation per graph and output; fp32 boxes above FP32_BOX_TOLERANCE raise ExportError.
    """
    import onnxruntime as ort

    inputs = example_inputs(model, batch=2, seed=1)
    with torch.inference_mode():
        ref = {kind: [t.numpy() for t in _as_tuple(GRAPH_SPECS[kind].module(model).eval()(
            *(inputs[n] for n in GRAPH_SPECS[kind].inputs)))] for kind in kinds}
    report = {}
    for kind in kinds:
        spec = GRAPH_SPECS[kind]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(folder / GRAPH_FILES[kind]), opts, providers=["CPUExecutionProvider"])
        feed = {n: inputs[n].numpy() for n in spec.inputs}
        if kind == "predictor":
            # The predictor is checked on its own graph's KV so that its error is not the encoder's.
            feed["template_kv"] = ref["encoder"][0] if "encoder" in ref else inputs["template_kv"].numpy()
        outs = sess.run(list(spec.outputs), feed)
        report[kind] = {name: float(np.max(np.abs(o.astype(np.float64) - r)))
                        for name, o, r in zip(spec.outputs, outs, ref[kind])}
    if precision == "fp32":
        worst = max(r.get("pred_boxes", 0.0) for r in report.values())
        if worst > FP32_BOX_TOLERANCE:
            raise ExportError(f"ONNX boxes deviate from PyTorch by {worst:.3g} > {FP32_BOX_TOLERANCE} (fp32): {report}")
    return report


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def export_model(model: MixFormerV2, out_dir: str | os.PathLike, precision: str = "fp32", opset: int = OPSET,
                 kinds=tuple(GRAPH_FILES), check: bool = True, fp32_source: str | os.PathLike | None = None,
                 trained_crop: dict[str, float] | None = None) -> dict:
    """Write the graphs and manifest.json into ``out_dir`` (created); returns the manifest.

    int8/fp16 graphs are derived from fp32 ones; ``fp32_source`` (an fp32 export folder of the
    same weights) saves tracing the model again. ``trained_crop`` (``trained_crop_factors`` of the
    checkpoint) goes into the manifest, so an ONNX-only deployment crops as the network was trained.

    The folder is assembled in a temporary sibling and renamed into place, so a crash or a
    concurrent export never leaves a half-written folder that a later run would trust.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    unknown = sorted(set(kinds) - set(GRAPH_FILES))
    if unknown or not kinds:
        raise ValueError(f"unknown graph kinds {unknown}; expected a subset of {list(GRAPH_FILES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an earlier export (no {MANIFEST}); refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if model.training or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float().cpu().eval()  # export an fp32 CPU eval copy; leave the caller's alone
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        started = time.perf_counter()
        for kind in kinds:
            fp32_path = tmp / GRAPH_FILES[kind]
            if fp32_source is not None and precision != "fp32":
                shutil.copyfile(Path(fp32_source) / GRAPH_FILES[kind], fp32_path)
            else:
                _export_graph(model, kind, fp32_path, opset)
            if precision == "int8" and kind != "encoder":
                # The encoder runs once per template update; int8 there would only add error to every frame's KV.
                # 4 Linears per block; the predictor's last block projects queries and keys/values apart.
                _quantize_int8(fp32_path, fp32_path, 4 * model.config.depth + (kind == "predictor"))
            elif precision == "fp16":
                _convert_fp16(fp32_path, fp32_path)
        parity = parity_check(model, tmp, precision, kinds) if check else None
        manifest = {
            "format": EXPORT_FORMAT, "opset": opset, "precision": precision, "config": model.config.to_dict(),
            "weights_sha256": weights_hash(model, precision, opset), "graphs": {k: GRAPH_FILES[k] for k in kinds},
            "inputs": {k: list(GRAPH_SPECS[k].inputs) for k in kinds},
            "outputs": {k: list(GRAPH_SPECS[k].outputs) for k in kinds},
            "input_layout": "uint8 RGB NHWC, normalised inside the graph", "parity_max_abs": parity,
            "trained_crop": dict(trained_crop or {}),
            "torch": torch.__version__, "export_seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        tmp.chmod(0o755)  # mkdtemp made it private; the cache may be shared with other users' readers
        _move_into_place(tmp, out_dir, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s (%s) in %.1f s; parity %s", out_dir, precision, manifest["export_seconds"], parity)
    return manifest


def _export_manifest(folder: Path, key: str, kinds) -> dict | None:
    """The manifest of ``folder`` if it holds the export of weights ``key`` with (at least) the graphs ``kinds``."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
        complete = recorded.get("weights_sha256") == key and all(
            recorded.get("graphs", {}).get(k) == GRAPH_FILES[k] and (folder / GRAPH_FILES[k]).is_file() for k in kinds)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return recorded if complete else None


def _move_into_place(tmp: Path, out_dir: Path, manifest: dict) -> None:
    """Rename the finished export ``tmp`` to ``out_dir``, replacing an older export there. Another
    process may be placing the same export at the same moment (two nodes on first boot): whichever
    finishes first wins, and the other keeps that folder and drops its own."""
    for _ in range(3):
        if out_dir.exists():
            if _export_manifest(out_dir, manifest["weights_sha256"], manifest["graphs"]) is not None:
                return  # the same export, finished by another process
            shutil.rmtree(out_dir, ignore_errors=True)
        try:
            tmp.rename(out_dir)
            return
        except OSError:  # another process put a folder there between the two steps: look again
            continue
    raise ExportError(f"could not place the export at {out_dir}: other processes keep replacing it")


def default_cache_dir() -> Path:
    root = os.environ.get("MIXFORMER_ROS_CACHE") or os.path.join("~", ".cache", "mixformer_ros")
    return Path(root).expanduser() / "onnx"


def cached_export(model: MixFormerV2, precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                  opset: int = OPSET, kinds=("encoder", "predictor"),
                  trained_crop: dict[str, float] | None = None) -> Path:
    """The export folder of these weights in the cache, exported (with its parity check) when absent.

    By default only the two graphs the ONNX Runtime backend runs are written (the full graph
    would add a third trace to the first start); ask for ``kinds`` to get more. ``trained_crop``
    is recorded as in ``export_model``; a folder of the same weights recording other factors
    (another file holding them) has its manifest brought up to date.
    """
    key = weights_hash(model, precision, opset)
    folder = Path(cache_dir or default_cache_dir()) / f"{key[:24]}-{precision}"
    trained_crop = dict(trained_crop or {})
    manifest = _export_manifest(folder, key, kinds)
    if manifest is not None:
        if manifest.get("trained_crop") != trained_crop:
            manifest["trained_crop"] = trained_crop
            replace_atomically(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
        return folder
    if folder.exists():
        log.warning("cached ONNX export %s is incomplete, unreadable or lacks %s; exporting again", folder, list(kinds))
        shutil.rmtree(folder, ignore_errors=True)  # the cache's own folder (without a manifest export_model keeps it)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(folder.parent, os.W_OK) else "not writable"
    except OSError as exc:
        problem = str(exc)
    if problem:
        raise ExportError(
            f"cannot write the ONNX export cache {folder.parent}: {problem}. Point MIXFORMER_ROS_CACHE (or the "
            f"cache_dir option) at a writable folder, or export once elsewhere (python -m {__name__}) and pass "
            "that folder as onnx_model"
        )
    source = cached_export(model, "fp32", cache_dir, opset, kinds, trained_crop) if precision != "fp32" else None
    # Exports killed midway (SIGKILL, or SIGTERM before Python's cleanup) leave their temporary
    # folders behind, hundreds of MB each for B; one this old belongs to no running export.
    for leftover in folder.parent.glob(f".{folder.name}.*"):
        with contextlib.suppress(OSError):  # another process may be removing it right now
            if time.time() - leftover.stat().st_mtime > STALE_EXPORT_S:
                shutil.rmtree(leftover)
    log.info("exporting MixFormerV2 to ONNX (%s) into %s; this happens once per checkpoint", precision, folder)
    try:
        export_model(model, folder, precision=precision, opset=opset, kinds=tuple(kinds), fp32_source=source,
                     trained_crop=trained_crop)
    except Exception as exc:
        if source is None:
            raise
        # The cached fp32 graphs it is derived from may be damaged (a power cut): redo them once.
        log.warning("deriving %s from the cached fp32 export %s failed (%s); exporting both again", precision, source, exc)
        shutil.rmtree(source, ignore_errors=True)
        source = cached_export(model, "fp32", cache_dir, opset, kinds, trained_crop)
        export_model(model, folder, precision=precision, opset=opset, kinds=tuple(kinds), fp32_source=source,
                     trained_crop=trained_crop)
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mixformer_ros.backends.export",
        description="Export a MixFormerV2 checkpoint to ONNX graphs (template encoder, per-frame predictor, full "
                    "joint pass) with uint8 NHWC inputs, and check them against PyTorch in ONNX Runtime.",
    )
    p.add_argument("checkpoint", help="checkpoint file (official {'net': ...}, bare state_dict, or ours)")
    p.add_argument("-o", "--output", required=True, help="output folder (an earlier export there is replaced; any other existing folder is refused)")
    p.add_argument("--variant", choices=["S", "B"], help="network shape when the checkpoint does not record it")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32; int8 = dynamic int8 MatMul weights (CPU); fp16 = float16 inside (CUDA/TensorRT)")
    p.add_argument("--graphs", nargs="+", choices=list(GRAPH_FILES), default=list(GRAPH_FILES),
                   help="which graphs to write (default: all)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one line per deduplicated initializer otherwise
    try:
        model, record = load_model_and_record(checkpoint=args.checkpoint,
                                              config=variant_config(args.variant) if args.variant else None)
        manifest = export_model(model, args.output, precision=args.precision, opset=args.opset,
                                kinds=tuple(args.graphs), check=not args.no_check,
                                trained_crop=trained_crop_factors(record))
    except (ExportError, ValueError, RuntimeError, OSError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    graphs = ", ".join(manifest["graphs"].values())
    print(f"wrote {args.output}: {graphs} (opset {manifest['opset']}, {args.precision})")
    for kind, devs in (manifest["parity_max_abs"] or {}).items():
        print(f"  parity {kind:9s} " + "  ".join(f"max|{k}| = {v:.2e}" for k, v in devs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
