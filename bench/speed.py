"""Speed of the MixFormerV2 tracker per variant x backend x precision x path, against the official way of running it.

Every contestant is a complete tracker stepping through the same real video, measured
interleaved in one process (bursts of a few frames each, the order rotated each round), so machine noise
(other processes on a shared box) hits all of them alike and the ratios stay meaningful. The
reference ("official") does what the official tracker does per frame: normalise the search crop
and run the joint network forward in eager fp32 PyTorch; it is our own code, not theirs.

Also recorded: CPU model and ISA, load average, the machine's sustained GEMM rate per precision
(fp32 with torch and ORT, bf16 with torch, int8 with ORT: the rooflines), FLOPs per frame counted
from the network, OpenCV NanoTrack's whole update as the CPU peer reference, and on a CUDA machine the GPU rows (skipped with a note here).

Usage: .venv/bin/python bench/speed.py [--variants S B] [--frames 80] [--frames-b 30] [--threads 2]
Writes bench/results/speed.json and the speed section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import register_flop_formula
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))
from paths import OPENCV_MODELS_DIR, SOT_DIR  # noqa: E402
from mixformer_ros.backends import export  # noqa: E402
from mixformer_ros.backends.onnxruntime_backend import OnnxRuntimeBackend, session_options  # noqa: E402
from mixformer_ros.backends.torch_backend import Normalize, TorchBackend  # noqa: E402
from mixformer_ros.evaluation.datasets import load_sequence  # noqa: E402
from mixformer_ros.model import MixFormerV2, load_model  # noqa: E402
from mixformer_ros.tracking import MixFormerTracker, preset_settings  # noqa: E402
from mixformer_ros.tracking.preprocessing import normalize_crops  # noqa: E402

RESULTS = REPO / "bench" / "results" / "speed.json"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SEQUENCE = "DragonBaby"  # 640x360, a typical camera frame size
MD_BEGIN, MD_END = "<!-- bench/speed.py: begin -->", "<!-- bench/speed.py: end -->"
# Issue 4 goals (whole tracker step, CPU, 2 threads), as speed-up over the official-style reference.
GOALS = {"S fp32": 3.5, "S int8": 8.0, "B fp32": 3.3}
# Pause (untimed) after every timed call. PyTorch's OpenMP workers busy-wait for several ms after
# each parallel region (libgomp's default spin count); without the pause they would steal the
# cores of whichever contestant runs next, the two-pools-in-one-process trap this bench must avoid.
SETTLE_S = 0.03
BURST_FRAMES = 8
# The official eager full forward as issue 4 measured it on its AMD EPYC Zen 5 VM (ms); another machine's yardstick.
ISSUE_OFFICIAL_MS = {"S": 56.0, "B": 319.0}


# --- contestants --------------------------------------------------------------------------------

class OfficialStyleBackend:
    """What the official tracker does per frame: normalise the search crop, joint forward, eager fp32."""

    name, device = "torch-official", "cpu"

    def __init__(self, model: MixFormerV2):
        self.model = model.float().eval()

    @torch.no_grad()
    def set_templates(self, template, online_template):
        self._t, self._ot = (torch.from_numpy(x) for x in normalize_crops(template, online_template)[:, None])

    @torch.no_grad()
    def predict(self, search):
        out = self.model(self._t, self._ot, torch.from_numpy(normalize_crops(search)))
        return out["pred_boxes"].reshape(4).numpy(), float(out["pred_scores"].item())


class OnnxFullBackend:
    """ORT running the exported joint graph every frame (the 'full' column for ORT), same session settings."""

    name, device = "onnxruntime-full", "cpu"

    def __init__(self, folder, num_threads):
        import onnxruntime as ort

        self._full = OnnxRuntimeBackend._session(ort, Path(folder), "full", ["CPUExecutionProvider"], num_threads)

    def set_templates(self, template, online_template):
        self._crops = (template[None], online_template[None])  # (1, T, T, 3) each

    def predict(self, search):
        boxes, scores = self._full.run(None, {"template": self._crops[0], "online_template": self._crops[1],
                                              "search": np.ascontiguousarray(search[None])})
        return boxes.reshape(4), float(scores[0])


class Timed:
    """Wraps a backend and records the time of each predict (the network) and set_templates."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.net_ms, self.update_ms = [], []

    def set_templates(self, t, ot):
        start = time.perf_counter()
        self.inner.set_templates(t, ot)
        self.update_ms.append(1e3 * (time.perf_counter() - start))

    def predict(self, s):
        start = time.perf_counter()
        out = self.inner.predict(s)
        self.net_ms.append(1e3 * (time.perf_counter() - start))
        return out


class NanoTrack:
    """OpenCV's TrackerNano (NanoTrack v2), the lightweight CPU peer reference."""

    name = "opencv-nanotrack"

    def __init__(self):
        import cv2

        params = cv2.TrackerNano_Params()
        params.backbone = str(OPENCV_MODELS_DIR / "nanotrack_backbone_sim.onnx")
        params.neckhead = str(OPENCV_MODELS_DIR / "nanotrack_head_sim.onnx")
        self.tracker = cv2.TrackerNano_create(params)

    def initialize(self, image_rgb, box):
        self.tracker.init(image_rgb[..., ::-1].copy(), tuple(int(round(v)) for v in box))

    def track(self, image_rgb):
        return self.tracker.update(image_rgb[..., ::-1].copy())


# --- machine ------------------------------------------------------------------------------------

def cpu_info() -> dict:
    model, flags = platform.processor(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
           if f in flags]
    return {"model": model, "isa": isa, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "mkldnn_bf16": bool(torch.backends.mkldnn.is_available()), "python": platform.python_version()}


class GemmProbe:
    """Square GEMMs (n x n x n) on ``threads`` threads, one per precision the trackers use: the machine's rooflines.

    fp32 through torch and ONNX Runtime (the better of the two is the fp32 roofline), bf16 through
    torch (oneDNN, the bf16 tracker's path) and int8 through ONNX Runtime's MatMulInteger (uint8
    activations x int8 weights, the kernel behind its dynamic int8 graphs). Measured sustained up
    front, and once per frame round between the trackers, so the share of the roofline a tracker
    reaches is computed against the same moment's (shared-machine) speed.
    """

    LIBRARIES = {"torch": "fp32", "ort": "fp32", "torch_bf16": "bf16", "ort_int8": "int8"}

    def __init__(self, threads: int, n: int = 1024):
        self.n, self.threads, self.flops = n, threads, 2.0 * n ** 3
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.a_bf16, self.b_bf16 = self.a.bfloat16(), self.b.bfloat16()
        rng = np.random.default_rng(0)
        self.sess = self._ort_matmul("MatMul", self.b.numpy(), threads)
        self.sess_int8 = self._ort_matmul("MatMulInteger", rng.integers(-128, 128, (n, n), dtype=np.int8), threads)
        self.feed = {"A": self.a.numpy()}
        self.feed_int8 = {"A": rng.integers(0, 256, (n, n), dtype=np.uint8)}
        self.samples = {which: [] for which in self.LIBRARIES}

    @staticmethod
    def _ort_matmul(op: str, weight: np.ndarray, threads: int):
        """A one-node ORT session multiplying its input by the constant ``weight`` (like a Linear)."""
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        n = weight.shape[0]
        a_type, c_type = (TensorProto.FLOAT, TensorProto.FLOAT) if op == "MatMul" else (TensorProto.UINT8, TensorProto.INT32)
        graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["C"])], "gemm",
                                  [helper.make_tensor_value_info("A", a_type, [n, n])],
                                  [helper.make_tensor_value_info("C", c_type, [n, n])],
                                  [numpy_helper.from_array(weight, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", export.OPSET)])
        return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])

    def _call(self, which: str) -> None:
        if which == "torch":
            torch.mm(self.a, self.b)
        elif which == "torch_bf16":
            torch.mm(self.a_bf16, self.b_bf16)
        elif which == "ort":
            self.sess.run(None, self.feed)
        else:
            self.sess_int8.run(None, self.feed_int8)

    def once(self) -> None:
        """One timed GEMM of each library and precision (G(FL)OP/s) into ``samples``."""
        for which in self.LIBRARIES:
            start = time.perf_counter()
            self._call(which)
            self.samples[which].append(self.flops / (time.perf_counter() - start) / 1e9)
            time.sleep(SETTLE_S)

    @classmethod
    def rooflines(cls, rates: dict) -> dict:
        """precision -> the best rate among the libraries measured at that precision."""
        return {precision: max(rates[f"{w}_gflops"] for w, p in cls.LIBRARIES.items() if p == precision)
                for precision in dict.fromkeys(cls.LIBRARIES.values())}

    def sustained(self, seconds: float = 1.0) -> dict:
        rates = {}
        for which in self.LIBRARIES:
            self._call(which)
            time.sleep(SETTLE_S)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                self._call(which)
                count += 1
            rates[f"{which}_gflops"] = self.flops * count / (time.perf_counter() - start) / 1e9
        return {"n": self.n, "threads": self.threads, **rates, "rooflines": self.rooflines(rates)}

    def interleaved(self) -> dict:
        med = {f"{k}_gflops": float(np.median(v)) for k, v in self.samples.items()}
        return {"n": self.n, "threads": self.threads, **med, "rooflines": self.rooflines(med)}


def sustained_roofline(threads: int, sizes=(512, 1024, 2048)) -> dict:
    """Per precision, the best sustained GEMM rate over a few square sizes (in and out of the L2 cache)."""
    runs = [GemmProbe(threads, n).sustained() for n in sizes]
    rooflines = {p: max(r["rooflines"][p] for r in runs) for p in runs[0]["rooflines"]}
    best_n = {p: next(r["n"] for r in runs if r["rooflines"][p] == rooflines[p]) for p in rooflines}
    return {"threads": threads, "rooflines": rooflines, "best_n": best_n, "by_size": runs}


def attention_flops(width: int, queries: int, keys: int) -> float:
    """QK^T and attention x V of one layer: 2 products x 2 FLOPs per multiply-add x q x k x width."""
    return 4.0 * queries * keys * width


@register_flop_formula(torch.ops.mixformer_ros.attend_to_cache)
def _attend_to_cache_flops(x_shape, weight_shape, bias_shape, kv_shape, num_heads, *args, **kwargs) -> int:
    """The fused cached attention: its qkv projection, then QK^T and attention x V over cache + tokens."""
    B, N, C = x_shape
    return 2 * B * N * C * weight_shape[1] + int(attention_flops(C, B * N, kv_shape[3] + N))


def count_flops(model: MixFormerV2) -> dict:
    """GFLOPs of one frame (batch 1): matmuls and the patch convolution counted by torch's
    FlopCounterMode, the fused cached attention by its formula below, plus attention products
    computed from the token counts (the counter does not see PyTorch's fused CPU attention kernel)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.config
    nt, ns = 2 * cfg.template_tokens, cfg.search_tokens + 4  # template + online tokens; search + prediction tokens
    # The cached path's blocks but the last are counted by the formula above; the last block asks
    # with the 4 prediction tokens only (the heads read nothing else).
    C = cfg.embed_dim
    attn = {"full": cfg.depth * (attention_flops(C, nt, nt) + attention_flops(C, ns, nt + ns)),
            "cached": attention_flops(C, 4, nt + ns),
            "template_update": cfg.depth * attention_flops(C, nt, nt)}
    inputs = export.example_inputs(model)
    t, ot, s = (Normalize()(inputs[k]) for k in ("template", "online_template", "search"))
    result = {}
    with torch.no_grad():
        for name, fn in (("full", lambda: model(t, ot, s)), ("cached", lambda: model.forward_search(s, inputs["template_kv"])),
                         ("template_update", lambda: model.encode_templates(t, ot))):
            with FlopCounterMode(display=False) as counter:
                fn()
            result[name] = (counter.get_total_flops() + attn[name]) / 1e9
    return result


def normalisation_cost(search_size: int, threads: int, rounds: int = 200) -> dict:
    """Preprocessing outside (NumPy, as the official tracker) vs inside the graph (ORT on uint8 NHWC)."""
    import onnxruntime as ort

    crop = np.random.default_rng(0).integers(0, 256, (search_size, search_size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "norm.onnx"
        with torch.no_grad():
            torch.onnx.export(Normalize().eval(), (torch.from_numpy(crop[None]),), str(path), dynamo=True,
                              opset_version=export.OPSET, input_names=["x"], output_names=["y"], external_data=False)
        sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        ms = {"numpy_ms": [], "ort_in_graph_ms": []}
        for _ in range(rounds):
            start = time.perf_counter()
            normalize_crops(crop)
            ms["numpy_ms"].append(1e3 * (time.perf_counter() - start))
            start = time.perf_counter()
            sess.run(None, {"x": crop[None]})
            ms["ort_in_graph_ms"].append(1e3 * (time.perf_counter() - start))
    return {k: float(np.median(v)) for k, v in ms.items()}


def iobinding_effect(backend: OnnxRuntimeBackend, search: np.ndarray, rounds: int = 20) -> dict:
    """predict() with the KV bound as a resident OrtValue vs a plain session.run() fed the KV as NumPy each frame."""
    kv = backend._template_kv.numpy()
    feed = {"search": np.ascontiguousarray(search[None]), "template_kv": kv}
    ms = {"iobinding_ms": [], "plain_run_ms": []}
    for _ in range(rounds):
        start = time.perf_counter()
        backend.predict(search)
        ms["iobinding_ms"].append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        backend._predictor.run(None, feed)
        ms["plain_run_ms"].append(1e3 * (time.perf_counter() - start))
    return {"kv_megabytes": kv.nbytes / 2 ** 20, **{k: float(np.median(v)) for k, v in ms.items()}}


def spinning_effect(folder: Path, feed: dict, threads: int, rounds: int = 40, gap_s: float = 0.03) -> dict:
    """The predictor with the package's spinning policy (spin during a run, stop after it) vs workers that
    never spin, call by call in turns, then ORT's default (spinning goes on after the run) on its own: such
    a session would slow the others down and its CPU would be counted for them. Median ms back to back,
    and CPU ms per frame with a camera-like gap of ``gap_s`` after each call."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # overriding a config entry below is intended; ORT warns about it

    def session(**entries):
        opts = session_options(threads)
        for key, value in entries.items():
            opts.add_session_config_entry(key, value)
        sess = ort.InferenceSession(str(folder / export.GRAPH_FILES["predictor"]), opts,
                                    providers=["CPUExecutionProvider"])
        sess.run(None, feed)
        return sess

    def measure(sessions: dict) -> dict:
        ms = {name: [] for name in sessions}
        cpu = {name: [] for name in sessions}
        for _ in range(rounds):
            for name, sess in sessions.items():
                start = time.perf_counter()
                sess.run(None, feed)
                ms[name].append(1e3 * (time.perf_counter() - start))
        for _ in range(rounds):
            for name, sess in sessions.items():
                start = time.process_time()
                sess.run(None, feed)
                time.sleep(gap_s)
                cpu[name].append(1e3 * (time.process_time() - start))
        return {**{f"{name}_ms": float(np.median(v)) for name, v in ms.items()},
                **{f"{name}_cpu_ms_per_frame": float(np.median(v)) for name, v in cpu.items()}}

    quiet = measure({"package": session(), "never_spin": session(**{"session.intra_op.allow_spinning": "0"})})
    return {"gap_ms": 1e3 * gap_s, **quiet, **measure({"ort_default": session(**{"session.force_spinning_stop": "0"})})}


def encoder_threads_effect(folder: Path, template: np.ndarray, search: np.ndarray, threads: int,
                           rounds: int = 12, predicts_per_update: int = 5) -> dict:
    """Template update time with a 1-thread encoder vs one with ``threads`` threads (the default), and the
    predictor's time beside each: a second pool must not slow the per-frame graph down."""
    backends = {n: OnnxRuntimeBackend(folder, num_threads=threads, encoder_threads=n) for n in (1, threads)}
    update_ms = {n: [] for n in backends}
    predict_ms = {n: [] for n in backends}
    for backend in backends.values():
        backend.set_templates(template, template)
    for _ in range(rounds):
        for n, backend in backends.items():
            for _ in range(predicts_per_update):
                start = time.perf_counter()
                backend.predict(search)
                predict_ms[n].append(1e3 * (time.perf_counter() - start))
            start = time.perf_counter()
            backend.set_templates(template, template)
            update_ms[n].append(1e3 * (time.perf_counter() - start))
    return {**{f"encoder_{n}_threads_ms": float(np.median(v)) for n, v in update_ms.items()},
            **{f"predict_beside_{n}_encoder_threads_ms": float(np.median(v)) for n, v in predict_ms.items()}}


# --- runs ---------------------------------------------------------------------------------------

def load_frames(count: int) -> tuple[list[np.ndarray], list[float]]:
    seq = load_sequence(SOT_DIR / SEQUENCE)
    frames = [np.ascontiguousarray(seq.read_frame(i)[..., ::-1]) for i in range(min(count, len(seq)))]
    return frames, seq.init_box.tolist()


def model_for(variant: str) -> tuple[MixFormerV2, str]:
    """The released S/B shapes with the parity fixture's weights: speed does not depend on weight values."""
    from parity import fixture_state_dict

    return load_model(state_dict=fixture_state_dict(variant)), "fixture weights (speed does not depend on their values)"


def contestants(variant: str, model: MixFormerV2, threads: int, cache_dir: Path, include_bf16: bool) -> dict:
    """name -> (backend, precision, path); ORT graphs come from the export cache (exported once)."""
    fp32, int8 = (export.cached_export(model, p, cache_dir, kinds=tuple(export.GRAPH_FILES)) for p in ("fp32", "int8"))
    out = {
        "official (torch eager full)": (OfficialStyleBackend(model), "torch", "fp32", "full"),
        "torch cached fp32": (TorchBackend(model), "torch", "fp32", "cached"),
        "onnxruntime full fp32": (OnnxFullBackend(fp32, threads), "onnxruntime", "fp32", "full"),
        "onnxruntime cached fp32": (OnnxRuntimeBackend(fp32, num_threads=threads), "onnxruntime", "fp32", "cached"),
        "onnxruntime full int8": (OnnxFullBackend(int8, threads), "onnxruntime", "int8", "full"),
        "onnxruntime cached int8": (OnnxRuntimeBackend(int8, num_threads=threads), "onnxruntime", "int8", "cached"),
    }
    if include_bf16:
        out["torch cached bf16"] = (TorchBackend(model, precision="bf16"), "torch", "bf16", "cached")
    return out


def summarise(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "n": int(a.size)}


def run_variant(variant: str, frames, init_box, args, cache_dir: Path, rooflines_before: dict) -> dict:
    model, weights = model_for(variant)
    settings = preset_settings(args.preset, model.config)
    entries = contestants(variant, model, args.threads, cache_dir, args.bf16)
    trackers = {name: MixFormerTracker(Timed(backend), model.config.template_size, model.config.search_size, settings)
                for name, (backend, *_rest) in entries.items()}
    nano = NanoTrack() if variant == "S" else None  # measured once, beside S
    for trk in trackers.values():
        trk.initialize(frames[0], init_box)
    if nano:
        nano.initialize(frames[0], init_box)
    step = {name: [] for name in trackers}
    nano_ms = []
    probe = GemmProbe(args.threads)
    runners = [(name, trk.track, step[name]) for name, trk in trackers.items()]
    if nano:
        runners.append(("nanotrack", nano.track, nano_ms))
    # Bursts of BURST_FRAMES consecutive frames per contestant, the order rotated each round. The
    # first frame of a burst pays for the cache the previous contestant evicted (a deployed tracker
    # runs alone), so it is not timed; everything else is, and every tracker sees every frame in order.
    bursts = range(1, len(frames), BURST_FRAMES)
    with tqdm(total=len(frames) - 1, desc=f"MixFormerV2-{variant}", unit="frame") as bar:
        for round_index, first in enumerate(bursts):
            shift = round_index % len(runners)
            for name, track, times in runners[shift:] + runners[:shift]:
                for i in range(first, min(first + BURST_FRAMES, len(frames))):
                    start = time.perf_counter()
                    track(frames[i])
                    if i > first:
                        times.append(1e3 * (time.perf_counter() - start))
                time.sleep(SETTLE_S)
            probe.once()
            bar.update(min(BURST_FRAMES, len(frames) - first))
    flops = count_flops(model)
    roofline = probe.interleaved()
    # Conservative: the better of the sustained (before the run) and the interleaved GEMM rates.
    roofline["rooflines"] = {p: max(rate, rooflines_before[p]) for p, rate in roofline["rooflines"].items()}
    rows = []
    ref_step = np.median(step["official (torch eager full)"])
    for name, (backend, backend_name, precision, path) in entries.items():
        timed = trackers[name].backend
        # predict k ran on frame k + 1; drop the untimed first frame of every burst, as for the step.
        net_ms = [ms for k, ms in enumerate(timed.net_ms) if k % BURST_FRAMES]
        net, stp = summarise(net_ms), summarise(step[name])
        rows.append({
            "variant": variant, "contestant": name, "backend": backend_name, "precision": precision, "path": path,
            "network": net, "step": stp, "fps": 1e3 / stp["median_ms"],
            "speedup_vs_official": ref_step / stp["median_ms"],
            "template_update_ms": float(np.median(timed.update_ms)) if path == "cached" else None,
            "network_gflops": flops[path] / (net["median_ms"] / 1e3),  # FLOPs of the path / network time
            "roofline_fraction": flops[path] / (net["median_ms"] / 1e3) / roofline["rooflines"][precision],
            "speedup_vs_issue_reference": ISSUE_OFFICIAL_MS[variant] / stp["median_ms"],
        })
    crop = np.random.default_rng(0).integers(0, 256, (model.config.search_size,) * 2 + (3,), dtype=np.uint8)
    kv = entries["onnxruntime cached int8"][0]._template_kv.numpy()
    result = {"weights": weights, "preset": args.preset, "flops_g": flops, "roofline_interleaved": roofline,
              "iobinding": iobinding_effect(entries["onnxruntime cached fp32"][0], crop),
              "spinning": spinning_effect(export.cached_export(model, "int8", cache_dir),
                                          {"search": crop[None], "template_kv": kv}, args.threads),
              "template_update": encoder_threads_effect(
                  export.cached_export(model, "fp32", cache_dir), crop[: model.config.template_size, : model.config.template_size],
                  crop, args.threads),
              "rows": rows}
    if nano:
        result["nanotrack"] = summarise(nano_ms)
    return result


def gpu_rows(variants, args) -> list[dict] | str:
    """torch fp32/fp16 and ORT CUDA/TensorRT on the GPU (cached path, network only)."""
    if not torch.cuda.is_available():
        return "skipped: no CUDA device visible to torch (this is a CPU-only machine)"
    import onnxruntime as ort

    rows = []
    rng = np.random.default_rng(0)
    for variant in variants:
        model, _ = model_for(variant)
        cfg = model.config
        t = rng.integers(0, 256, (cfg.template_size, cfg.template_size, 3), dtype=np.uint8)
        s = rng.integers(0, 256, (cfg.search_size, cfg.search_size, 3), dtype=np.uint8)
        backends = {f"torch cuda {p}": TorchBackend(load_model(state_dict=model.state_dict()), device="cuda", precision=p)
                    for p in ("fp32", "fp16")}
        if "CUDAExecutionProvider" in ort.get_available_providers():
            with tempfile.TemporaryDirectory() as tmp:
                for p in ("fp32", "fp16"):
                    folder = export.cached_export(model, p, Path(args.cache_dir or tmp))
                    backends[f"onnxruntime cuda {p}"] = OnnxRuntimeBackend(folder, device="cuda")
        for name, backend in backends.items():
            backend.set_templates(t, t)
            for _ in range(10):
                backend.predict(s)
            ms = []
            for _ in range(100):
                start = time.perf_counter()
                backend.predict(s)  # returns host numbers, so the GPU work is finished
                ms.append(1e3 * (time.perf_counter() - start))
            rows.append({"variant": variant, "contestant": name, "network": summarise(ms),
                         "providers": getattr(getattr(backend, "_predictor", None), "get_providers", lambda: None)()})
    return rows


# --- report -------------------------------------------------------------------------------------

def goals(results: dict) -> list[dict]:
    """Issue 4's CPU goals, checked from this run's numbers (ratio to the interleaved official run)."""
    out = []
    for key, target in GOALS.items():
        variant, precision = key.split()
        if variant not in results["variants"]:
            continue
        rows = [r for r in results["variants"][variant]["rows"]
                if r["backend"] == "onnxruntime" and r["precision"] == precision and r["path"] == "cached"]
        if not rows:
            continue
        r, res = rows[0], results["variants"][variant]
        goal = {"goal": f"{key}: whole step >= {target}x official", "measured": round(r["speedup_vs_official"], 2),
                "vs_issue_reference": round(r["speedup_vs_issue_reference"], 2), "met": bool(r["speedup_vs_official"] >= target)}
        # No tracker of this precision can beat this: the cached path's FLOPs at the machine's GEMM
        # roofline for the precision, with nothing else (crop, attention, norms) costing any time.
        official_ms = next(o["step"]["median_ms"] for o in res["rows"] if o["path"] == "full" and o["backend"] == "torch")
        ceiling_ms = res["flops_g"]["cached"] / res["roofline_interleaved"]["rooflines"][precision] * 1e3
        goal["ceiling_x"] = round(official_ms / ceiling_ms, 2)
        if key == "S fp32":
            goal.update({"fps": round(r["fps"], 1), "roofline_fraction": round(r["roofline_fraction"], 2),
                         "met": bool(goal["met"] and r["fps"] >= 60 and r["roofline_fraction"] >= 0.8)})
            goal["goal"] += ", >= 60 FPS, >= 80% of the GEMM roofline"
        out.append(goal)
    return out


def table(results: dict) -> str:
    lines = ["| variant | contestant | network median / p90 ms | tracker step median / p90 ms | FPS | x official "
             "(interleaved) | x issue's official | network G(FL)OP/s (share of its precision's roofline) | template update ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant, res in results["variants"].items():
        for r in res["rows"]:
            upd = f"{r['template_update_ms']:.1f}" if r["template_update_ms"] is not None else "-"
            lines.append(
                f"| {variant} | {r['contestant']} | {r['network']['median_ms']:.1f} / {r['network']['p90_ms']:.1f} "
                f"| {r['step']['median_ms']:.1f} / {r['step']['p90_ms']:.1f} | {r['fps']:.1f} "
                f"| {r['speedup_vs_official']:.2f} | {r['speedup_vs_issue_reference']:.2f} "
                f"| {r['network_gflops']:.0f} ({r['roofline_fraction']:.0%}) | {upd} |")
        if "nanotrack" in res:
            n = res["nanotrack"]
            lines.append(f"| - | OpenCV NanoTrack v2 (whole update) | - | {n['median_ms']:.1f} / {n['p90_ms']:.1f} "
                         f"| {1e3 / n['median_ms']:.0f} | - | - | - | - |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m, roof = results["machine"], results["roofline"]
    parts = [
        MD_BEGIN,
        "## Tracker speed (bench/speed.py)",
        "",
        f"Run {results['when']} on **{m['model']}** ({m['logical_cpus']} logical CPUs, ISA: {', '.join(m['isa'])}), "
        f"{results['threads']} threads, torch {m['torch']}, onnxruntime {results['onnxruntime']}, "
        f"OMP_WAIT_POLICY {results['omp_wait_policy']}. "
        f"Load average before/after: {results['load_before']} / {results['load_after']} (shared machine: "
        f"absolute times are noisy; the contestants are interleaved in bursts of {BURST_FRAMES} frames, the first of each burst untimed, so the ratios are the robust part).",
        "",
        f"Video: {SEQUENCE} (first {results['frames']['S']} frames for S, {results['frames']['B']} for B; "
        f"{results['frame_size']}), preset `{results['preset']}`. "
        "'Official' = our code doing what the official tracker does each frame (NumPy normalise + joint forward, "
        "eager fp32). Network = backend call (preprocessing included); step = whole `track()` (crop, network, map-back).",
        "",
        f"GEMM rooflines ({roof['threads']} threads), best sustained square GEMM before the run "
        f"(n = {', '.join(str(r['n']) for r in roof['by_size'])}): "
        + ", ".join(f"{p} {rate:.0f} G(FL)OP/s (n = {roof['best_n'][p]})" for p, rate in roof["rooflines"].items())
        + " (fp32: the better of torch and ORT; bf16: torch/oneDNN; int8: ORT MatMulInteger, uint8 x int8); "
        "1024^3 measured once per frame round between the trackers, and each row's share refers to the better of "
        "that and the figure before the run: "
        + "; ".join(f"{v}: " + ", ".join(f"{p} {rate:.0f}" for p, rate in r["roofline_interleaved"]["rooflines"].items())
                    for v, r in results["variants"].items())
        + f". 'x issue's official' divides the official times the issue measured on its AMD EPYC (Zen 5) "
        f"({ISSUE_OFFICIAL_MS} ms) by ours: a cross-machine figure, only the interleaved column is a like-for-like ratio.",
        "",
        table(results),
        "",
        "FLOPs per frame (linear layers and patch convolution counted with torch's FlopCounterMode, attention "
        "products from the token counts): "
        + "; ".join(f"{v}: full {r['flops_g']['full']:.2f} G, cached {r['flops_g']['cached']:.2f} G, "
                    f"template update {r['flops_g']['template_update']:.2f} G ({r['weights']})"
                    for v, r in results["variants"].items()) + ".",
        "",
        "Template keys/values kept as a resident OrtValue (IOBinding) vs fed as NumPy to session.run each frame "
        "(ORT fp32 cached network call, median ms): "
        + "; ".join(f"{v} ({r['iobinding']['kv_megabytes']:.1f} MB KV): {r['iobinding']['iobinding_ms']:.1f} vs "
                    f"{r['iobinding']['plain_run_ms']:.1f}" for v, r in results["variants"].items()) + ".",
        "",
        "ORT worker spinning (cached int8 predictor, session.run; median ms back to back, then CPU ms per frame "
        "with a camera-like gap after each call; the first two take turns call by call, ORT's default runs alone "
        "after them): "
        + "; ".join(f"{v}: spin during a run and stop after it (package) {r['spinning']['package_ms']:.1f} ms / "
                    f"{r['spinning']['package_cpu_ms_per_frame']:.1f} CPU ms, never spin "
                    f"{r['spinning']['never_spin_ms']:.1f} / {r['spinning']['never_spin_cpu_ms_per_frame']:.1f}, ORT default "
                    f"(keeps spinning after the run) {r['spinning']['ort_default_ms']:.1f} / "
                    f"{r['spinning']['ort_default_cpu_ms_per_frame']:.1f} ({r['spinning']['gap_ms']:.0f} ms gap)"
                    for v, r in results["variants"].items()) + ".",
        "",
        "Template update (ORT fp32 encoder) with 1 thread vs as many threads as the predictor (the default), "
        "median ms, with the predictor's median beside each: "
        + "; ".join(f"{v}: " + ", ".join(f"{n} thread(s) {r['template_update'][f'encoder_{n}_threads_ms']:.1f} "
                                         f"(predict {r['template_update'][f'predict_beside_{n}_encoder_threads_ms']:.1f})"
                                         for n in sorted({1, results['threads']}))
                    for v, r in results["variants"].items()) + ".",
        "",
        f"Preprocessing of one 288x288 search crop: NumPy (outside the graph) {results['normalisation']['numpy_ms']:.2f} ms, "
        f"ORT in the graph on uint8 NHWC {results['normalisation']['ort_in_graph_ms']:.2f} ms.",
        "",
        "Goals (issue 4): " + "; ".join(f"{g['goal']}: {g['measured']}x{' ' + str(g.get('fps')) + ' FPS' if 'fps' in g else ''}"
                                        f"{', roofline ' + format(g['roofline_fraction'], '.0%') if 'roofline_fraction' in g else ''}"
                                        f" (vs the issue's official times {g['vs_issue_reference']}x)"
                                        f"; ceiling at this precision's GEMM roofline {g['ceiling_x']}x"
                                        f" -> {'MET' if g['met'] else 'NOT met'}" for g in results["goals"]) + ".",
        "",
        f"GPU: {results['gpu'] if isinstance(results['gpu'], str) else 'see speed.json'}",
        MD_END,
    ]
    return "\n".join(parts)


def update_benchmarks_md(section: str, begin: str = MD_BEGIN, end: str = MD_END) -> None:
    """Replace this script's marked section of BENCHMARKS.md (other scripts own other sections)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", choices=["S", "B"], default=["S", "B"])
    p.add_argument("--frames", type=int, default=80, help="video frames for S (default 80)")
    p.add_argument("--frames-b", type=int, default=30, help="video frames for B, ~6x slower per frame (default 30)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ORT (default 2)")
    p.add_argument("--preset", default="demo", help="tracker preset (template update interval)")
    p.add_argument("--cache-dir", help="ONNX export cache (default: a temporary folder)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the torch bf16 row")
    p.add_argument("--no-write", action="store_true", help="print only; do not write JSON or BENCHMARKS.md")
    p.add_argument("--omp-passive", action="store_true",
                   help="re-run under OMP_WAIT_POLICY=PASSIVE (PyTorch's workers sleep instead of spinning)")
    args = p.parse_args(argv)
    if args.omp_passive and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        # libgomp reads the policy once, when torch loads, so the script has to start again with it.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    results = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
               "machine": cpu_info(), "onnxruntime": ort.__version__, "preset": args.preset,
               "load_before": [round(x, 2) for x in os.getloadavg()],
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, spins)")}
    results["roofline"] = sustained_roofline(args.threads)
    print("GEMM rooflines (G(FL)OP/s):", {p: round(r) for p, r in results["roofline"]["rooflines"].items()})
    frames, init_box = load_frames(max(args.frames, args.frames_b))
    results.update(frames={"S": args.frames, "B": args.frames_b}, frame_size=f"{frames[0].shape[1]}x{frames[0].shape[0]}")
    results["normalisation"] = normalisation_cost(288, args.threads)
    results["variants"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        for variant in args.variants:
            count = args.frames if variant == "S" else args.frames_b
            results["variants"][variant] = run_variant(variant, frames[:count], init_box, args, cache,
                                                       results["roofline"]["rooflines"])
        results["gpu"] = gpu_rows(args.variants, args)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["goals"] = goals(results)
    print(table(results))
    for g in results["goals"]:
        print(f"goal {g['goal']}: {g['measured']}x (issue's official: {g['vs_issue_reference']}x, ceiling "
              f"{g['ceiling_x']}x) {g.get('fps', '')} {'MET' if g['met'] else 'NOT met'}")
    if isinstance(results["gpu"], str):
        print("GPU:", results["gpu"])
    if not args.no_write:
        # The --omp-passive run is kept beside the default one, in its own file and section.
        passive = os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
        out = RESULTS.with_name("speed_omp_passive.json") if passive else RESULTS
        begin, end = (MD_BEGIN.replace("speed.py", "speed.py --omp-passive"), MD_END.replace("speed.py", "speed.py --omp-passive")) \
            if passive else (MD_BEGIN, MD_END)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        section = markdown(results).replace(MD_BEGIN, begin).replace(MD_END, end)
        if passive:
            section = section.replace("## Tracker speed (bench/speed.py)", "## Tracker speed (bench/speed.py --omp-passive)")
        update_benchmarks_md(section, begin, end)
        print(f"wrote {out} and {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
