"""Triton load test on this machine: the `smpler` ensemble (crop -> project session -> uncrop, all in Triton's
Python backend) served by the tritonserver PyTriton bundles, on loopback; N clients x M requests over HTTP and gRPC.

Checks every response against the direct session (same crop, batch 1), that the dynamic batcher batched
(statistics endpoint: inference_count > execution_count), that malformed requests get Triton errors while the
server keeps serving, and that shutdown is clean (process gone, ports free).
Usage: python benchmarks/triton_load.py [--onnx smpler_fp32.onnx] [--clients 4] [--requests 8] [--threads 2]
       [--out benchmarks/reports/triton]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from smpler_deploy.bench.machine import cpu_model, library_versions
from smpler_deploy.fileio import outputs, write_text_atomic
from smpler_deploy.precision import Precision
from smpler_deploy.serve import loadtest as L
from smpler_deploy.serve.local_server import LocalTriton, port_free
from smpler_deploy.serve.repository import RepoOptions, write_repository

SERVED = ("smpler_python", "smpler_crop", "smpler_uncrop", "smpler")  # this build has no onnxruntime backend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", help="fp32 graph to serve (default: export the default model now)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=8, help="per client")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, in Triton and direct alike")
    ap.add_argument("--queue-delay-us", type=int, default=20000)
    ap.add_argument("--out", default="benchmarks/reports/triton")
    a = ap.parse_args()
    out = Path(a.out)

    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    with outputs(out / "report.json", out / "report.md", force=True, dirs=[(out, "--out")]), \
            tempfile.TemporaryDirectory(prefix="smpler-triton-bench-") as tmp:
        onnx = Path(a.onnx) if a.onnx else None
        if onnx is None:
            from smpler_deploy.export.onnx_export import export_onnx

            onnx = Path(tmp) / "smpler_fp32.onnx"
            export_onnx(onnx, precision=Precision("fp32"))
        import onnx as onnx_lib

        onnx_meta = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
        repo = Path(tmp) / "repo"
        opts = RepoOptions(ensemble="python", onnx_device="cpu", max_batch=8, preferred=(4, 8),
                           queue_delay_us=a.queue_delay_us, session_threads=a.threads)
        write_repository(repo, onnx=onnx, opts=opts)

        n = a.clients * a.requests
        reqs = L.make_requests(min(n, 16))
        direct = OnnxRuntimeSession(onnx, threads=a.threads)
        L.direct_outputs(direct, reqs[0])  # warm-up
        t_direct = []
        expected = []
        for r in reqs:
            t0 = time.perf_counter()
            expected.append(L.direct_outputs(direct, r))
            t_direct.append((time.perf_counter() - t0) * 1e3)
        direct.close()

        load_before = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
        srv = LocalTriton(repo, models=SERVED)
        t0 = time.perf_counter()
        with srv:
            start_s = time.perf_counter() - t0
            m, c = L.connect("http", srv.http_url)
            meta = c.get_server_metadata()
            L.infer_one(m, c, reqs[0])  # warm-up (first request loads lazily initialized kernels)
            c.close()
            before = L.model_stats(srv, "smpler_python")
            load = L.run_load(srv, reqs, expected, a.clients, a.requests)
            after = L.model_stats(srv, "smpler_python")
            bad = L.malformed(srv)
            m, c = L.connect("grpc", srv.grpc_url)
            still = L.infer_one(m, c, reqs[1])
            c.close()
            still_ok = all(float(np.abs(still[k] - expected[1][k]).max()) <= L.TOLERANCE * max(1.0, float(np.abs(
                expected[1][k]).max())) for k in L.ALL_OUTPUTS)
            ports, pid = list(srv.ports), srv.proc.pid
        rc = srv.proc.returncode
        gone = srv.proc.poll() is not None
        ports_free = all(port_free(p) for p in ports)

    stats = {k: after[k] - before[k] for k in ("inference_count", "execution_count")}
    stats["batch_sizes"] = {b: after["batch_sizes"].get(b, 0) - before["batch_sizes"].get(b, 0)
                            for b in after["batch_sizes"]}
    stats["batch_sizes"] = {b: v for b, v in stats["batch_sizes"].items() if v}
    worst = max(load["max_scaled_diff_vs_direct"].values())
    report = {
        "what": "smpler ensemble (python crop -> python-backend ONNX Runtime session -> python uncrop) on the "
                "tritonserver bundled with PyTriton, loopback (127.0.0.1), CPU only",
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "gpu": None},
        "versions": {"triton_server": meta.get("version"), **_versions()},
        "model": {"onnx": str(a.onnx or "exported now"), "metadata": _graph_meta(onnx_meta), "ort_threads": a.threads},
        "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2),
                              "cores": os.cpu_count()},
        "repository": {"max_batch_size": opts.max_batch, "preferred_batch_size": list(opts.preferred),
                       "max_queue_delay_us": opts.queue_delay_us, "instances": opts.instances},
        "server_start_s": round(start_s, 2),
        "direct_session_batch1_ms": {"p50": L._pct(np.array(t_direct), 50), "n": len(t_direct)},
        "load": load,
        "equal_to_direct": {"tolerance": L.TOLERANCE, "measure": "max |diff| / max(1, |value|) per output",
                            "max_scaled_diff": worst, "ok": worst <= L.TOLERANCE and not load["errors"]},
        "batching": {**stats, "batched": stats["inference_count"] > stats["execution_count"]},
        "malformed": bad,
        "served_after_malformed": still_ok,
        "shutdown": {"returncode": rc, "process_gone": gone, "ports_free": ports_free, "pid": pid},
    }
    write_report(out, report)
    print(json.dumps({k: report[k] for k in ("equal_to_direct", "batching", "served_after_malformed", "shutdown")}))
    print(f"p50 {load['latency_ms']['p50']} ms, p99 {load['latency_ms']['p99']} ms, {load['throughput_rps']} req/s")


def _graph_meta(meta: dict) -> dict:
    keys = ("variant", "precision", "checkpoint", "untrained", "body_model", "plugins", "producer")
    return {k: meta[k] for k in keys if k in meta}


def _versions() -> dict:
    from importlib.metadata import version

    libs = {k: v for k, v in library_versions().items() if v and k not in ("triton", "tensorrt_rtx", "polygraphy")}
    return {**libs, "tritonclient": version("tritonclient"), "nvidia-pytriton": version("nvidia-pytriton")}


def write_report(out: Path, r: dict) -> None:
    ld, lat = r["load"], r["load"]["latency_ms"]
    lines = [
        "# Triton Inference Server: load test (CPU only, loopback)", "",
        f"{r['what']}. Triton server {r['versions'].get('triton_server')}; CPU {r['machine']['cpu']}; "
        f"ONNX Runtime {r['model']['ort_threads']} threads; graph: {r['model']['metadata']}. "
        f"1-minute load average {r['load_average_1min']['before']} before / {r['load_average_1min']['after']} after "
        f"on {r['load_average_1min']['cores']} cores (other work shared the machine). "
        "Written by `python benchmarks/triton_load.py`. No GPU was used; this is not a GPU number.", "",
        f"- {ld['clients']} concurrent clients ({ld['protocols']['http']} HTTP, {ld['protocols']['grpc']} gRPC) x "
        f"{ld['requests_per_client']} requests: {ld['completed']} completed, {len(ld['errors'])} errors",
        f"- latency per request: p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms "
        f"(min {lat['min']}, max {lat['max']}); throughput {ld['throughput_rps']} requests/s over {ld['wall_s']} s",
        f"- direct session, same crops, batch 1, one caller: p50 {r['direct_session_batch1_ms']['p50']} ms",
        f"- every response vs the direct session (same crop, batch 1): "
        f"{'equal' if r['equal_to_direct']['ok'] else 'NOT equal'} within {r['equal_to_direct']['tolerance']:g} of "
        f"max(1, |value|); largest |diff| per output: "
        + ", ".join(f"{k} {v:.2g}" for k, v in ld["max_abs_diff_vs_direct"].items())
        + " (joints2d_image in pixels: float32 rounding at ~500 px)",
        f"- dynamic batching (smpler_python, statistics endpoint): inference_count {r['batching']['inference_count']}, "
        f"execution_count {r['batching']['execution_count']}, executions by batch size {r['batching']['batch_sizes']}"
        f" (max_queue_delay {r['repository']['max_queue_delay_us']} us, preferred {r['repository']['preferred_batch_size']})",
        f"- server start (all models loaded): {r['server_start_s']} s", "",
        "| malformed request | protocol | Triton error |", "|---|---|---|",
        *(f"| {c['case']} | {c['protocol']} | {(c['error'] or 'NO ERROR').replace('|', '/')} |" for c in r["malformed"]),
        "", f"Served a valid request correctly after the malformed ones: {r['served_after_malformed']}. "
        f"Shutdown: exit code {r['shutdown']['returncode']}, process gone {r['shutdown']['process_gone']}, "
        f"ports free {r['shutdown']['ports_free']}.", "",
        "Latency here is the whole ensemble (crop, batching queue, the model on 2 shared vCPUs, uncrop) with 4 "
        "requests in flight, so it includes queueing behind other requests; the direct line is one request alone. "
        "The machine is shared, so read the numbers as indications.",
    ]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "report.json", json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
