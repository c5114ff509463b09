"""Export wall time and CPU latency of SMPLer's ONNX graphs, side by side with the PyTorch baselines.

Exports (or, with --onnx-dir, reuses) fp32, fp16, int8 (--target trt) and int8 (--target cpu) graphs of the
default model, then in ONE run measures at each batch size:

* PyTorch official-style eager forward (`load_model(..., official_style=True)`) - the baseline (ratio 1.0);
* our PyTorch reference forward;
* each graph in ONNX Runtime's CPU provider (--threads intra-op threads),

with warm-up and N timed iterations (p50, mean), the ratio of p50 to the official eager p50, and the vertex
deviation (mean / max mm) of each backend from PyTorch fp32 on the same fixed crops (`smpler_deploy.fidelity`).
Writes report.json and report.md atomically to --out (default benchmarks/reports/export_latency/).

    python benchmarks/export_latency.py                       # export into a temp dir, batch 1
    python benchmarks/export_latency.py --onnx-dir DIR --batch 1 8 --iters 30

Targets checked at batch 1: ORT fp32 <= 0.55x and ORT int8 (--target cpu) <= 0.40x official eager latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from smpler_deploy.precision import Precision

GRAPHS = {  # name -> (file, export kwargs)
    "ort fp32": ("smpler_fp32.onnx", {"precision": Precision("fp32")}),
    "ort fp16": ("smpler_fp16.onnx", {"precision": Precision("fp16")}),
    "ort int8 trt": ("smpler_int8_trt.onnx", {"precision": Precision("int8", "trt")}),
    "ort int8 cpu": ("smpler_int8_cpu.onnx", {"precision": Precision("int8", "cpu")}),
}
TARGETS = {"ort fp32": 0.55, "ort int8 cpu": 0.40}  # max ratio to official eager at batch 1
DEFAULT_OUT = Path(__file__).parent / "reports" / "export_latency"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def time_fn(fn, x, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        fn(x)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in ts]
    return {"p50_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "min_ms": min(ms), "max_ms": max(ms),
            "iters": iters, "warmup": warmup}


def images_for(batch: int) -> np.ndarray:
    from smpler_deploy.export.onnx_export import fidelity_inputs

    x = fidelity_inputs(4)
    return np.ascontiguousarray(np.resize(x, (batch,) + x.shape[1:]).astype(np.float32))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-dir", help="reuse smpler_{fp32,fp16,int8_trt,int8_cpu}.onnx from here (missing ones "
                                       "are exported into it)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args(argv)

    import torch

    from smpler_deploy import __version__, load_model
    from smpler_deploy.bench.machine import cpu_model, library_versions, usable_cores
    from smpler_deploy.export.onnx_export import export_onnx
    from smpler_deploy.fidelity import fidelity, jsonable
    from smpler_deploy.fileio import write_text_atomic
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    torch.set_num_threads(a.threads)
    tmp = None
    if a.onnx_dir:
        onnx_dir = Path(a.onnx_dir)
        onnx_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="smpler_bench_")
        onnx_dir = Path(tmp.name)

    say("loading models ...")
    ref_model = load_model("smpler")
    official = load_model("smpler", official_style=True)

    exports = {}
    for name, (fname, kw) in GRAPHS.items():
        path = onnx_dir / fname
        if path.exists():
            exports[name] = {"path": str(path), "export_s": None, "reused": True}
            say(f"{name}: reusing {path}")
            continue
        say(f"{name}: exporting ...")
        t0 = time.perf_counter()
        export_onnx(path, model=ref_model, **kw)
        exports[name] = {"path": str(path), "export_s": time.perf_counter() - t0, "reused": False,
                         "size_mib": path.stat().st_size / 2**20}
        say(f"{name}: exported in {exports[name]['export_s']:.1f} s")
    for e in exports.values():
        e["size_mib"] = Path(e["path"]).stat().st_size / 2**20

    def torch_fn(m):
        def run(x):
            with torch.inference_mode():
                return m(torch.from_numpy(x)).numpy()
        return run

    backends = {"torch official eager": torch_fn(official), "torch reference": torch_fn(ref_model)}
    sessions = {}
    for name in GRAPHS:
        s = OnnxRuntimeSession(exports[name]["path"], threads=a.threads)
        sessions[name] = s
        exports[name]["ort_optimization"] = s.optimization
        backends[name] = s.infer

    rows = []
    for b in a.batch:
        x = images_for(b)
        ref = torch_fn(ref_model)(x)
        for name, fn in backends.items():
            say(f"batch {b}: timing {name} ...")
            fid = fidelity(ref, fn(x))
            st = time_fn(fn, x, a.warmup, a.iters)
            rows.append({"batch": b, "backend": name, **st,
                         "vertices_mean_mm": fid["vertices"]["mean_mm"], "vertices_max_mm": fid["vertices"]["max_mm"],
                         "finite": fid["finite"]})
        base = next(r["p50_ms"] for r in rows if r["batch"] == b and r["backend"] == "torch official eager")
        for r in rows:
            if r["batch"] == b:
                r["ratio_vs_official"] = r["p50_ms"] / base
    for s in sessions.values():
        s.close()

    checks = []
    for name, lim in TARGETS.items():
        r = next((r for r in rows if r["batch"] == 1 and r["backend"] == name), None)
        if r is not None:
            checks.append({"backend": name, "batch": 1, "target_ratio": lim, "ratio": r["ratio_vs_official"],
                           "met": r["ratio_vs_official"] <= lim})

    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    report = {
        "benchmark": "export_latency", "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": cpu_model(), "usable_cores": usable_cores(), "loadavg_at_end": load,
                    "libraries": library_versions()},
        "settings": {"threads": a.threads, "iters": a.iters, "warmup": a.warmup, "batches": a.batch,
                     "model": "default untrained smpler, stand-in body model", "inputs": "fidelity_inputs crops"},
        "exports": exports, "latency": rows, "targets": checks,
    }

    md = ["# SMPLer export latency (CPU)", "",
          f"{report['machine']['cpu']}, {a.threads} threads (torch and ORT intra-op), {a.iters} iterations after "
          f"{a.warmup} warm-up; load average at end {' '.join(load)} (shared machine: expect noise).", "",
          "## Export wall time", "", "| graph | export (s) | size (MiB) | ORT optimization |", "|---|---:|---:|---|"]
    for name, e in exports.items():
        es = "reused" if e["export_s"] is None else f"{e['export_s']:.1f}"
        md.append(f"| {name} | {es} | {e['size_mib']:.1f} | {e['ort_optimization']} |")
    md += ["", "## Latency", "",
           "| batch | backend | p50 (ms) | mean (ms) | ratio vs official eager (p50) | vertices mean (mm) | "
           "vertices max (mm) |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['batch']} | {r['backend']} | {r['p50_ms']:.1f} | {r['mean_ms']:.1f} | "
                  f"{r['ratio_vs_official']:.2f}x | {r['vertices_mean_mm']:.4g} | {r['vertices_max_mm']:.4g} |")
    md += ["", "## Targets (batch 1)", "", "| backend | target | measured | met |", "|---|---:|---:|---|"]
    for c in checks:
        md.append(f"| {c['backend']} | <= {c['target_ratio']:.2f}x | {c['ratio']:.2f}x | "
                  f"{'yes' if c['met'] else 'NO'} |")
    md.append("")
    text = "\n".join(md)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.json", json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    write_text_atomic(out / "report.md", text)
    print(text)
    say(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
