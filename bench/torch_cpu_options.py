"""Which PyTorch CPU options speed up the torch backend's cached path: eager fp32, a bf16 backbone
(oneDNN on CPUs with avx512_bf16/AMX), and optionally torch.compile. Interleaved in one process.

Usage: .venv/bin/python bench/torch_cpu_options.py [--variant S] [--threads 1] [--compile]
Writes bench/results/torch_cpu_options.json and its section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))
from parity import fixture_state_dict  # noqa: E402
from speed import cpu_info, summarise, update_benchmarks_md  # noqa: E402
from mixformer_ros.backends.torch_backend import TorchBackend  # noqa: E402
from mixformer_ros.model import load_model  # noqa: E402

RESULTS = REPO / "bench" / "results" / "torch_cpu_options.json"
MD_BEGIN, MD_END = "<!-- bench/torch_cpu_options.py: begin -->", "<!-- bench/torch_cpu_options.py: end -->"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=["S", "B"], default="S")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compilation)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    def fresh(precision="fp32"):
        return TorchBackend(load_model(state_dict=fixture_state_dict(args.variant)), precision=precision)

    backends = {"eager fp32": fresh(), "eager bf16": fresh("bf16")}
    cfg = backends["eager fp32"].model.config
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, (cfg.template_size, cfg.template_size, 3), dtype=np.uint8)
    s = rng.integers(0, 256, (cfg.search_size, cfg.search_size, 3), dtype=np.uint8)
    compile_s = None
    if args.compile:
        backend = fresh()
        start = time.perf_counter()
        backend.model.backbone.forward_search = torch.compile(backend.model.backbone.forward_search)
        backend.set_templates(t, t)
        backend.predict(s)  # compiles
        compile_s = time.perf_counter() - start
        backends["torch.compile fp32"] = backend
    for backend in backends.values():
        backend.set_templates(t, t)
        backend.predict(s)
    ref = backends["eager fp32"].predict(s)[0]
    ms = {name: [] for name in backends}
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.predict(s)
            ms[name].append(1e3 * (time.perf_counter() - start))
    rows = {name: {**summarise(v), "max_box_dev_vs_fp32": float(np.abs(backends[name].predict(s)[0] - ref).max())}
            for name, v in ms.items()}
    res = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "variant": args.variant, "threads": args.threads,
           "machine": cpu_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
           "load": [round(x, 2) for x in os.getloadavg()], "compile_seconds": compile_s, "rows": rows}
    base = rows["eager fp32"]["median_ms"]
    lines = [MD_BEGIN, "## PyTorch CPU options, cached path (bench/torch_cpu_options.py)", "",
             f"Run {res['when']}, MixFormerV2-{args.variant}, {args.threads} thread(s), {res['machine']['model']} "
             f"({', '.join(res['machine']['isa'])}), load average {res['load']}, OMP_WAIT_POLICY {res['omp_wait_policy']}."
             + (f" torch.compile took {compile_s:.0f} s to compile." if compile_s else ""), "",
             "| option | network median / p90 ms | x eager fp32 | max box deviation vs fp32 (crop-normalised) |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {r['median_ms']:.1f} / {r['p90_ms']:.1f} | {base / r['median_ms']:.2f} | {r['max_box_dev_vs_fp32']:.1e} |"
              for n, r in rows.items()]
    lines.append(MD_END)
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2))
        update_benchmarks_md("\n".join(lines), MD_BEGIN, MD_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
