"""The benchmark matrix: backends × precisions × batches on one fixed input set, plus two baselines.

Baselines always run: our official-style transcription of the official forward (torch, fp32, its layout: full SMPL
mesh four times, projected keys; `model/official_style.py`) and our torch fp32 reference; with `official_repo` set,
the official repository's own forward too (`official_repo.py`: speed-ups then divide by it), all on the report's one
device (`device` cpu|cuda): with device cuda every cell (baselines, torch
fp16/bf16, torch CUDA graphs, ONNX Runtime CUDA/TensorRT EPs, engines) runs on the same GPU, so speed-ups are
GPU against GPU; with device cpu the GPU-only cells are skipped. Each runnable cell: open a session, warm up, time N
calls, record peak host RSS, and compare its outputs on the same inputs with the reference (`smpler_deploy.fidelity`).
The baselines and the reference are timed together, one call of each per round: run one after another, a noisy
host moved their ratios by 20% between runs; interleaved, the machine's drift slows them alike.
Cells that cannot run here are kept in the report as `skipped` with the reason; cells that raise are kept as
`failed`. Which cells there are, and why one is skipped, is `plan.py`; this module runs them.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SmplerError, one_line, opt
from ..fidelity import check_gate, fidelity, gate_limits
from ..precision import Precision
from .plan import (BACKENDS, DEVICES, VARIANTS, BenchConfig, BenchEnv, Group, gpu_available, parse_artifacts,
                   parse_batches, parse_choices, parse_precisions, plan, tensorrt_importable)
from .report import BASELINE_KINDS, KINDS, MODEL_GFLOPS, TIMED_TOGETHER, Cell, Report
from .stats import latency_stats

__all__ = ["BACKENDS", "DEVICES", "VARIANTS", "BenchConfig", "BenchEnv", "Group", "bench_inputs", "device_used_mb",
           "gpu_available", "parse_artifacts", "parse_batches", "parse_choices", "parse_precisions", "peak_rss_mb",
           "plan", "reset_peak_rss", "run_benchmark", "tensorrt_importable"]

# --- measurement helpers -----------------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0: write 5 to clear_refs) so each cell gets its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


def bench_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """n fixed crops of scikit-image's public-domain photos, held out from calibration."""
    from ..preprocess import heldout_crops

    return heldout_crops(n, seed)


def device_used_mb(release_cache: bool = True) -> float | None:
    """Device memory in use on the current GPU (cudaMemGetInfo through torch), None without CUDA. Taken before a
    cell's session opens and after its timed loop, the difference is what that session holds (weights,
    activations, workspaces, CUDA graphs, allocator caches), whichever library allocated it."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.synchronize()
        if release_cache:  # before a cell: the previous cell's cached blocks are not this cell's; after a cell
            torch.cuda.empty_cache()  # they stay: torch's cache then holds this cell's peak working set
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20
    except Exception:  # noqa: BLE001 - memory is a column, never a reason to fail a cell
        return None


def _ensure_onnx(cfg: BenchConfig, precision: Precision) -> Path:
    """Export the ONNX file a cell needs into the cache dir (once per precision; reused across runs)."""
    if cfg.cache_dir is None:
        raise SmplerError(f"cell onnxruntime/{precision}: no {opt('onnx')} file and no cache directory to export into")
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.cache_dir / f"{cfg.variant}_{precision}.onnx"
    if not path.is_file():
        from ..export import onnx_export as E

        E.export_onnx(path, precision=precision, variant=cfg.variant,
                      checkpoint=cfg.session_kw.get("checkpoint"), smpl_model=cfg.session_kw.get("smpl_model"),
                      batch=(1, max(cfg.batches), max(8, *cfg.batches)), progress=cfg.progress)
    cfg.onnx[precision] = path
    return path


def _open(cfg: BenchConfig, g: Group):
    from ..runtime import open_session

    kw = dict(cfg.session_kw) if g.runtime in ("torch", "official-repo") else {}  # artifacts carry their weights
    kw |= g.kw
    kw.pop("precision", None)  # the group's own (typed) precision is the one passed
    if g.runtime == "official-repo":
        from .official_repo import OfficialRepoSession

        return OfficialRepoSession(cfg.official_repo, variant=cfg.variant, threads=cfg.threads, **kw)
    if g.kind == "official":
        kw["official"] = True
    if g.runtime == "onnxruntime" and g.artifact is None:
        g.artifact = _ensure_onnx(cfg, g.precision)
    if g.runtime == "tensorrt":
        kw["kernel_dir"] = cfg.kernel_dir
    return open_session(g.runtime, precision=g.precision, path=str(g.artifact) if g.artifact else None,
                        variant=cfg.variant, threads=cfg.threads, **kw)


def run_benchmark(cfg: BenchConfig) -> Report:
    from tqdm import tqdm

    from .machine import machine_info

    groups = plan(cfg)
    inputs, desc = bench_inputs(max(cfg.batches), cfg.seed)
    from ..model.checkpoint import default_model_info

    info = dict(default_model_info(cfg.variant))  # the reference cell replaces it with what was really loaded
    model = {"variant": cfg.variant, "untrained": bool(info.get("untrained", True)),
             "standin_body": bool(info.get("standin_body", True)), "gflops_per_image": MODEL_GFLOPS[cfg.variant],
             "info": info}
    settings = {"iters": cfg.iters, "warmup": cfg.warmup, "threads": cfg.threads, "backends": cfg.backends,
                "precisions": [p.name for p in cfg.precisions], "batches": cfg.batches, "seed": cfg.seed,
                "device": cfg.device,
                "providers": sorted({g.kw["provider"] for g in groups if "provider" in g.kw}),
                "device_memory_method": ("cudaMemGetInfo in use after the cell minus before its session opened"
                                         if cfg.device == "cuda" else None),
                "inputs": {"description": desc, "shape": [max(cfg.batches), 3, 224, 224]},
                "rss_method": "VmHWM reset per cell" if reset_peak_rss() else "ru_maxrss (process peak)"}
    if cfg.device == "cuda":  # torch's TF32 switches decide what its fp32 cells compute; record them
        import torch

        settings["torch_tf32"] = {"cudnn_conv": torch.backends.cudnn.allow_tf32,
                                  "matmul": torch.backends.cuda.matmul.allow_tf32}
    rep = Report(model=model, settings=settings, machine=machine_info(cfg.threads, cfg.measure_gemm),
                 command=cfg.command)
    if cfg.dataset is not None:
        ds = cfg.dataset
        rep.dataset = {"name": ds.name, "file": str(ds.path), "samples": len(ds), "metrics": list(ds.protocol),
                       "protocol": ("MPJPE (hip-midpoint re-centred) and PA-MPJPE on H36M-14" if ds.name == "h36m"
                                    else "MPVE (neutral-model GT mesh), MPJPE, PA-MPJPE")}
    runnable = [g for g in groups if g.reason is None]
    total = len(cfg.batches) * (cfg.iters + cfg.warmup) * len(runnable)
    bar = tqdm(total=total, disable=not cfg.progress, unit="it", file=sys.stderr, dynamic_ncols=True)
    ref_out: dict[int, object] = {}
    for g in groups:
        rep.cells.extend(g.cells)
        if g.reason is not None:
            for c in g.cells:
                c.status, c.reason = "skipped", g.reason
    baselines = [g for g in runnable if g.kind in TIMED_TOGETHER]
    try:
        if baselines:
            _run_groups(cfg, baselines, inputs, ref_out, bar, rep.model)
        for g in runnable:
            if g not in baselines:
                _run_groups(cfg, [g], inputs, ref_out, bar, rep.model)
    finally:
        bar.close()
    if cfg.measure_gemm:
        from .machine import refresh_gemm_peaks

        refresh_gemm_peaks(rep.machine, cfg.threads)
    rank = {k: i for i, k in enumerate(KINDS)}
    rep.cells.sort(key=lambda c: rank[c.kind])  # stable: baselines first, then the matrix in request order
    return rep


@dataclass
class _Timing:
    """One cell in a timing round: its session, input and what its calls measured."""

    group: Group
    cell: Cell
    sess: object
    x: np.ndarray
    out: object = None
    times: list = field(default_factory=list)
    device: list = field(default_factory=list)
    error: str | None = None

    def call(self, timed: bool) -> None:
        if self.error is not None:
            return
        try:
            t0 = time.perf_counter()
            out = self.sess.infer(self.x)
            if not timed:
                self.out = out if self.out is None else self.out  # the first call's outputs, for fidelity
                return
            self.times.append(time.perf_counter() - t0)
            if self.sess.last_device_ms is not None:  # GPU sessions time the engine alone
                self.device.append(self.sess.last_device_ms / 1000)
        except SmplerError:
            raise  # user input problem: stop with the one-line message
        except Exception as e:  # noqa: BLE001 - this cell fails, the others go on
            self.error = one_line(e)


def _time_round_robin(cfg, runs: list[_Timing], bar) -> None:
    """Warm up, then time cfg.iters calls of each run, one call of each per round: runs timed together see the
    same machine (a load that comes and goes slows them alike), so their ratios hold on a noisy host."""
    for _ in range(max(cfg.warmup, 1)):  # the first call's outputs are kept; it is part of the warm-up
        for r in runs:
            r.call(timed=False)
    bar.update(len(runs) * cfg.warmup)
    for _ in range(cfg.iters):
        for r in runs:
            r.call(timed=True)
        bar.update(len(runs))


def _open_group(cfg, g: Group, model: dict | None, bar):
    """The group's session (its cells get the setup time), or None with every cell failed: the matrix goes on."""
    sess = None
    try:
        t0 = time.perf_counter()
        sess = _open(cfg, g)
        for c in g.cells:
            c.setup_s, c.artifact = time.perf_counter() - t0, str(g.artifact) if g.artifact else None
        if g.kind == "official-repo" and model is not None:
            model["official_repo"] = sess.repo_info
        got = sess.precision
        if got != g.precision:
            raise SmplerError(f"{g.artifact} carries precision {got}, but the cell is {g.precision}; "
                              f"pass it as {got}=PATH")
        return sess
    except Exception as e:  # noqa: BLE001 - keep the matrix going; the cell records why
        if sess is not None:
            sess.close()
        for c in g.cells:
            c.status, c.reason = "failed", f"session: {one_line(e)}"
        bar.update(len(g.cells) * (cfg.iters + cfg.warmup))
        return None


def _batch_refusal(g: Group, c: Cell) -> str | None:
    """Why an engine cannot run the cell's batch (outside its profile: a failed cell, not an aborted benchmark)."""
    if g.runtime != "tensorrt" or not g.artifact:
        return None
    from ..artifacts import engine_batch_range
    from ..trt.manifest import read_manifest

    lo, hi = engine_batch_range(read_manifest(g.artifact))
    return None if lo <= c.batch <= hi else f"batch {c.batch} is outside the engine's profile {lo}..{hi} (rebuild with --batch)"


def _run_groups(cfg, groups: list[Group], inputs, ref_out, bar, model: dict | None = None) -> None:
    """Open the groups' sessions and time each batch's cells together, round robin (one group: alone). The
    baselines run as one such set, so the ratios between them do not depend on when each ran."""
    bar.set_description(", ".join(g.cells[0].id.rsplit("/", 1)[0] for g in groups))
    gc.collect()
    reset_peak_rss()
    mem0 = device_used_mb() if cfg.device == "cuda" else None
    opened = []
    try:
        for g in groups:
            sess = _open_group(cfg, g, model, bar)
            if sess is not None:
                opened.append((g, sess))
        for b in cfg.batches:
            runs = []
            for g, sess in opened:
                for c in (c for c in g.cells if c.batch == b):
                    if (why := _batch_refusal(g, c)) is not None:
                        c.status, c.reason = "failed", why
                        bar.update(cfg.iters + cfg.warmup)
                    else:
                        runs.append(_Timing(g, c, sess, np.ascontiguousarray(inputs[:b])))
            reset_peak_rss()
            _time_round_robin(cfg, runs, bar)
            for r in runs:  # the reference first (plan order): the others' fidelity compares with its outputs
                _finish_cell(cfg, r, ref_out, model, mem0)
    finally:
        for _, sess in opened:
            sess.close()


def _finish_cell(cfg, r: _Timing, ref_out, model: dict | None, mem0: float | None) -> None:
    c, g = r.cell, r.group
    if r.error is not None:
        c.status, c.reason = "failed", r.error
        return
    try:
        c.latency = latency_stats(r.times, c.batch).to_dict()
        if r.device:
            c.device_latency = latency_stats(r.device, c.batch).to_dict()
        if mem0 is not None:  # one method for every GPU cell: what the cell's sessions hold
            c.device_memory_mb = device_used_mb(release_cache=False) - mem0
        c.peak_rss_mb = peak_rss_mb()
        if g.kind == "reference":
            ref_out[c.batch] = r.out
            if model is not None:  # what was actually loaded wins (the reference is a torch session)
                i = r.sess.info
                model |= {"untrained": i.untrained, "standin_body": i.standin_body, "checkpoint": i.checkpoint}
                if i.body_model is not None:
                    model["body_model"] = i.body_model
        if c.batch in ref_out:
            c.fidelity = fidelity(ref_out[c.batch], r.out)
            c.fidelity_gate = check_gate(c.fidelity, gate_limits(None, c.precision))  # int8 default
        if cfg.dataset is not None and g.kind not in BASELINE_KINDS and c.batch == max(cfg.batches):
            from .dataset import evaluate

            c.dataset_metrics = evaluate(r.sess, cfg.dataset, cfg.images_root, batch=c.batch,
                                         body_fn=cfg.body_fn, j_regressor_h36m=cfg.j_regressor_h36m)
    except SmplerError:
        raise  # user input problem (e.g. dataset): stop with the one-line message
    except Exception as e:  # noqa: BLE001
        c.status, c.reason = "failed", one_line(e)
