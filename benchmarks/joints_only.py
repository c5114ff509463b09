"""Micro-benchmark: what joints-only refinement saves (intermediate stages without the 6890-vertex mesh).

Times one SMPL evaluation both ways and the whole PyTorch forward with the mesh evaluated 4x (official) vs 1x.
Usage: python benchmarks/joints_only.py [--iters 20] [--out benchmarks/reports/joints_only]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from smpler_deploy import load_model
from smpler_deploy.body import lbs as L
from smpler_deploy.fileio import write_text_atomic
from smpler_deploy.model.checkpoint import calibration_batch


def timeit(fn, iters: int) -> float:
    fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/reports/joints_only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("smpler")
    h = model.smpl_handler
    rows = []
    with torch.inference_mode():
        for b in (1, 8):
            rot = torch.eye(3).repeat(b, 24, 1, 1)
            betas, cam = torch.zeros(b, 10), torch.tensor([[0.9, 0, 0]]).repeat(b, 1)
            full = timeit(lambda: h(rot, betas, cam), a.iters * 5)
            joints = timeit(lambda: h.joints2d(rot, betas, cam), a.iters * 5)
            x = torch.from_numpy(calibration_batch(b))
            model.official_style = False
            ours = timeit(lambda: model(x), a.iters)
            model.full_mesh_stages = True
            mesh4 = timeit(lambda: model(x), a.iters)
            model.full_mesh_stages = False
            model.official_style = True
            official = timeit(lambda: model(x), a.iters)
            model.official_style = False
            rows.append({"batch": b, "smpl_full_ms": full, "smpl_joints_only_ms": joints,
                         "forward_mesh_4x_ms": mesh4, "forward_joints_only_ms": ours, "forward_official_ms": official})
    lines = ["# Joints-only refinement: what it saves", "",
             f"PyTorch {torch.__version__}, {a.threads} threads, {platform.processor() or platform.machine()}; "
             "median of timed iterations. Forward columns: the same model with the mesh evaluated at all 4 stages "
             "vs joints-only intermediate stages (both with folded attention), and for context the official-style "
             "forward (mesh 4x and textbook attention).", "",
             "| batch | one SMPL eval, full mesh (ms) | joints only (ms) | forward, mesh 4x (ms) | forward, joints-only (ms) "
             "| joints-only saving | official-style forward (ms) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        save = r["forward_mesh_4x_ms"] - r["forward_joints_only_ms"]
        lines.append(f"| {r['batch']} | {r['smpl_full_ms']:.2f} | {r['smpl_joints_only_ms']:.3f} | "
                     f"{r['forward_mesh_4x_ms']:.1f} | {r['forward_joints_only_ms']:.1f} | "
                     f"{save:.1f} ms ({100 * save / r['forward_mesh_4x_ms']:.1f}%) | {r['forward_official_ms']:.1f} |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "report.json", json.dumps({"rows": rows, "threads": a.threads,
                                                        "torch": torch.__version__}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
