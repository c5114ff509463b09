"""int8 `--target cpu` with 8-bit vs 7-bit (reduce_range) weights: fidelity and batch-1 latency on this CPU.

ONNX Runtime's u8s8 kernels on AVX2 CPUs without VNNI saturate int16 pair sums of 8-bit weights (vpmaddubsw);
7-bit weights cannot. This script measures what the 7-bit layout costs where nothing saturates (a VNNI CPU gives
the exact 8-bit result): vertex mean/max mm vs PyTorch fp32 over held-out crops, and p50 latency at batch 1.
Both graphs come from one fp32 export and one calibration set (the built-in 16 crops); timings interleaved.

    python benchmarks/int8_cpu_range.py --threads 2 --iters 30 --crops 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from smpler_deploy import load_model
from smpler_deploy.export.int8 import quantize
from smpler_deploy.export.onnx_export import export_torch_graph
from smpler_deploy.fidelity import fidelity
from smpler_deploy.fileio import write_text_atomic
from smpler_deploy.model.checkpoint import calibration_batch
from smpler_deploy.preprocess import heldout_crops
from smpler_deploy.runtime.ort_session import OnnxRuntimeSession


def cpu_flags() -> list[str]:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "reports" / "int8_cpu_range"))
    a = ap.parse_args()
    model = load_model("smpler")
    x = heldout_crops(a.crops)[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    res = {"cpu_flags": cpu_flags(), "threads": a.threads, "iters": a.iters, "crops": a.crops, "cells": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_torch_graph(model, fp32)
        calib = calibration_batch(16)
        sessions = {}
        for name, rr in (("8-bit weights (before)", False), ("7-bit weights, reduce_range (after)", True)):
            p = Path(tmp) / f"int8_{int(rr)}.onnx"
            quantize(fp32, p, calib, target="cpu", reduce_range=rr)
            sessions[name] = OnnxRuntimeSession(p, threads=a.threads)
            v = fidelity(ref, sessions[name].infer(x))["vertices"]
            res["cells"][name] = {"vertices_mean_mm": v["mean_mm"], "vertices_max_mm": v["max_mm"], "ms": []}
        x1 = x[:1]
        for s in sessions.values():
            for _ in range(5):
                s.infer(x1)
        for _ in range(a.iters):  # interleaved so machine load hits both alike
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.infer(x1)
                res["cells"][name]["ms"].append((time.perf_counter() - t0) * 1e3)
        for s in sessions.values():
            s.close()
    res["loadavg"] = os.getloadavg()
    lines = [f"# int8 --target cpu: 8-bit vs 7-bit weights", "",
             f"CPU flags: {', '.join(res['cpu_flags'])}; {a.threads} threads; batch 1 p50 of {a.iters} (interleaved); "
             f"fidelity on {a.crops} held-out crops vs PyTorch fp32; load average after {res['loadavg'][0]:.1f}", "",
             "| weights | vertices mean | vertices max | batch 1 p50 | batch 1 min |", "|---|---:|---:|---:|---:|"]
    for name, c in res["cells"].items():
        c["p50_ms"], c["min_ms"] = statistics.median(c["ms"]), min(c["ms"])
        lines.append(f"| {name} | {c['vertices_mean_mm']:.2f} mm | {c['vertices_max_mm']:.1f} mm | "
                     f"{c['p50_ms']:.1f} ms | {c['min_ms']:.1f} ms |")
    out = Path(a.out)
    write_text_atomic(out / "report.json", json.dumps(res, indent=2) + "\n")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
