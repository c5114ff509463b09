"""report.json (versioned schema, see benchmarks/REPORT_SCHEMA.md) and report.md for a benchmark run."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import OptionError, SmplerError
from ..fidelity import jsonable
from ..fileio import write_text_atomic
from ..precision import Precision

SCHEMA = "smpler-deploy/bench-report"
SCHEMA_VERSION = 1
# Nominal model cost per 224×224 image: 2×MAC of conv/linear/matmul/bmm/einsum, as torch.utils.flop_counter counts
# them on the model (grid_sample, softmax, normalization and elementwise ops not counted).
MODEL_GFLOPS = {"smpler": 18.785, "smpler-l": 35.508}
# the official repository's own forward (`official_repo`), our official-style transcription of it, our torch fp32
# reference, the rest. Speed-ups divide by the first of the two official kinds that ran at the cell's batch.
KINDS = ("official-repo", "official", "reference", "deployed")
BASELINE_KINDS = ("official-repo", "official")
# The cells timed together, one call of each per round (bench/runner.py), so their ratios hold on a noisy host.
TIMED_TOGETHER = ("reference", *BASELINE_KINDS)
# The GEMM ceiling each precision's arithmetic is held against (machine.py): ONNX Runtime's int8-cpu layout runs
# its u8s8 integer kernels; everything else (the TensorRT-layout int8 graph included, fake-quantized on ONNX
# Runtime CPU) runs float arithmetic.
PEAK_KEY = {"int8-cpu": "gemm_int8_peak_gops"}
DEFAULT_PEAK_KEY = "gemm_fp32_peak_gflops"
STATUSES = ("ok", "skipped", "failed")


@dataclass
class Cell:
    """One (backend, precision, batch) measurement. `kind` separates the two baselines from deployed cells."""

    backend: str
    precision: Precision  # a report spelling given here is parsed once (Precision.parse); written as its name
    batch: int
    kind: str = "deployed"
    status: str = "ok"
    reason: str | None = None  # why skipped/failed
    artifact: str | None = None  # ONNX/engine path, when the cell ran one
    setup_s: float | None = None  # session open (+ export) time
    latency: dict | None = None  # LatencyStats.to_dict()
    device_latency: dict | None = None  # GPU backends: engine time alone (CUDA events), LatencyStats.to_dict()
    peak_rss_mb: float | None = None
    device_memory_mb: float | None = None  # GPU backends: device memory in use after the cell
    fidelity: dict | None = None  # fidelity.fidelity() vs the torch fp32 reference, same inputs
    fidelity_gate: str | None = None  # over smpler-export's default `max_error_mm` (int8): what was exceeded
    speedup_vs_official: float | None = None  # throughput ratio vs the baseline cell (speedup_baseline), same batch
    speedup_baseline: str | None = None  # id of the cell speedup_vs_official divides by
    speedup_vs_reference: float | None = None  # throughput ratio vs our torch fp32 reference, same batch
    achieved_gflops: float | None = None  # nominal model GFLOPs × images/s
    dataset_metrics: dict | None = None

    def __post_init__(self):
        self.precision = Precision.parse(self.precision)

    @property
    def id(self) -> str:
        name = {"official-repo": "official-repo", "official": "torch-official",
                "reference": "torch-reference"}.get(self.kind, self.backend)
        return f"{name}/{self.precision}/b{self.batch}"

    def to_dict(self) -> dict:
        return {"id": self.id, **asdict(self), "precision": self.precision.name}


@dataclass
class Report:
    model: dict  # variant, untrained, standin_body, gflops_per_image
    settings: dict  # iters, warmup, threads, backends, precisions, batches, inputs
    machine: dict
    cells: list[Cell] = field(default_factory=list)
    dataset: dict | None = None  # name, file, samples, protocol
    command: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def finalize(self) -> "Report":
        """Fill derived columns: speed-up vs the baseline (the official repository's forward when it ran at that
        batch, else our official-style transcription) and vs our reference, and achieved GFLOP/s."""
        gf = self.model.get("gflops_per_image")
        ok = [c for c in self.cells if c.status == "ok" and c.latency]
        base: dict[int, Cell] = {}
        for kind in reversed(BASELINE_KINDS):  # the official repository's cell wins where both ran
            base |= {c.batch: c for c in ok if c.kind == kind}
        ref = {c.batch: c for c in ok if c.kind == "reference"}
        for c in ok:
            thr = c.latency["throughput_ips"]
            if c.batch in base:
                b = base[c.batch]
                c.speedup_vs_official, c.speedup_baseline = thr / b.latency["throughput_ips"], b.id
            if c.batch in ref:
                c.speedup_vs_reference = thr / ref[c.batch].latency["throughput_ips"]
            c.achieved_gflops = gf * thr if gf else None
        return self

    def to_dict(self) -> dict:
        from .. import __version__

        return jsonable({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.created,
                         "tool": {"name": "smpler-deploy", "version": __version__}, "command": self.command,
                         "model": self.model, "settings": self.settings, "machine": self.machine,
                         "cells": [c.to_dict() for c in self.cells], "dataset": self.dataset})


# --- schema validation (hand-rolled: no jsonschema dependency) ----------------------------------------------------

_TOP = {"schema": str, "schema_version": int, "created": str, "tool": dict, "command": str, "model": dict,
        "settings": dict, "machine": dict, "cells": list}
_CELL = {"id": str, "backend": str, "precision": str, "batch": int, "kind": str, "status": str}
_LAT = ("iters", "batch", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_ips")


def validate_report(d: dict) -> dict:
    """Check a report.json dict against schema version 1; raise SmplerError naming the first problem."""
    def need(obj, spec, where):
        for k, t in spec.items():
            if k not in obj:
                raise SmplerError(f"{where}: missing key '{k}'")
            if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
                raise SmplerError(f"{where}.{k}: expected {t.__name__}, got {type(obj[k]).__name__}")

    need(d, _TOP, "report")
    if d["schema"] != SCHEMA or d["schema_version"] != SCHEMA_VERSION:
        raise SmplerError(f"report: schema {d['schema']} v{d['schema_version']}, expected {SCHEMA} v{SCHEMA_VERSION}")
    need(d["model"], {"variant": str, "untrained": bool, "standin_body": bool}, "report.model")
    for i, c in enumerate(d["cells"]):
        where = f"report.cells[{i}]"
        need(c, _CELL, where)
        if c["kind"] not in KINDS or c["status"] not in STATUSES:
            raise SmplerError(f"{where}: kind/status {c['kind']}/{c['status']} not in {KINDS}/{STATUSES}")
        if c["status"] == "ok":
            if not isinstance(c.get("latency"), dict) or any(k not in c["latency"] for k in _LAT):
                raise SmplerError(f"{where}.latency: expected keys {', '.join(_LAT)}")
        elif not c.get("reason"):
            raise SmplerError(f"{where}: a {c['status']} cell needs a reason")
    for kind in ("official", "reference"):
        if not any(c["kind"] == kind for c in d["cells"]):
            raise SmplerError(f"report.cells: no '{kind}' baseline cell")
    return d


# --- markdown ----------------------------------------------------------------------------------------------------

def _n(v, fmt="{:.2f}", none="–"):
    if v is None:
        return none
    return "0" if fmt == "{:.3g}" and abs(v) < 5e-7 else fmt.format(v)  # float64 round-off reads as exact


def banner(model: dict) -> str:
    parts = []
    if model.get("untrained"):
        parts.append("weights are **untrained** (seeded random init; BatchNorm statistics re-estimated) — latency is "
                     "representative, dataset accuracy is not")
    if model.get("standin_body"):
        parts.append("the body model is a **stand-in** (synthetic arrays with SMPL's shapes, not SMPL)")
    return "> **Note:** " + "; ".join(parts) + ".\n" if parts else ""


def baseline_lines(cells: list[dict], official_repo: dict | None = None) -> list[str]:
    """The Baselines section: which cell every speed-up divides by, and what our transcription costs against the
    official repository's own forward where both ran (`official_repo`: the checkout timed, from the model block)."""
    ok = {c["id"]: c for c in cells if c["status"] == "ok"}
    used = sorted({c["speedup_baseline"] for c in ok.values() if c.get("speedup_baseline")})
    L = ["## Baselines", ""]
    if not used:
        return L + ["No baseline cell ran: no speed-ups.", ""]
    L += [f"Speed-ups divide by {', '.join(f'`{u}`' for u in used)} at the same batch "
          + (f"(the official repository's own forward, --official-repo{_checkout(official_repo)})."
             if any(u.startswith("official-repo/") for u in used)
             else "(our official-style transcription of the official forward; pass --official-repo to time the "
                  "official code itself).")]
    for c in ok.values():
        if c["kind"] != "official-repo":
            continue
        ours = ok.get(f"torch-official/fp32/b{c['batch']}")
        if ours:
            ratio = ours["latency"]["mean_ms"] / c["latency"]["mean_ms"]
            p50 = ours["latency"]["p50_ms"] / c["latency"]["p50_ms"]  # robust to a few slow iterations
            L.append(f"- batch {c['batch']}: our transcription `{ours['id']}` costs {ratio:.2f}× the official code "
                     f"(mean {ours['latency']['mean_ms']:.1f} vs {c['latency']['mean_ms']:.1f} ms; p50 {p50:.2f}×)")
        f = (c.get("fidelity") or {}).get("vertices") or {}
        if f:
            L.append(f"- batch {c['batch']}: the official code's vertices vs our reference: mean "
                     f"{_n(f.get('mean_mm'), '{:.3g}')} / max {_n(f.get('max_mm'), '{:.3g}')} mm")
    return L + [""]


def _checkout(info: dict | None) -> str:
    if not info:
        return ""
    return f" `{info.get('repo')}`" + (f" at commit {info['commit'][:12]}" if info.get("commit") else "")


def render_markdown(rep: dict, plots: list[str] | None = None) -> str:
    m, s, mach = rep["model"], rep["settings"], rep["machine"]
    L = [f"# smpler-bench: {m.get('variant')}", ""]
    b = banner(m)
    if b:
        L += [b]
    libs = ", ".join(f"{k} {v}" for k, v in (mach.get("libraries") or {}).items() if v)
    gpus = "; ".join(f"{g['name']} (driver {g['driver']})" for g in mach.get("gpus") or []) or "none"
    peak = mach.get("gemm_fp32_peak_gflops")
    peak8 = mach.get("gemm_int8_peak_gops")
    L += ["## Setup", "",
          f"- created {rep['created']} with smpler-deploy {rep['tool']['version']}; command: `{rep.get('command') or '-'}`",
          f"- CPU: {mach.get('cpu')} ({mach.get('usable_cores')} usable cores, threads {s.get('threads') or 'default'}); GPU: {gpus}",
          f"- libraries: {libs}",
          f"- measured fp32 GEMM peak: {_n(peak, '{:.1f}')} GFLOP/s (best of "
          f"{', '.join(f'{k} {v:.0f}' for k, v in (mach.get('gemm_fp32_gflops_by_library') or {}).items()) or '-'}); "
          f"measured int8 GEMM peak (u8s8, what int8-cpu cells run): {_n(peak8, '{:.1f}')} GOP/s (best of "
          f"{', '.join(f'{k} {v:.0f}' for k, v in (mach.get('gemm_int8_gops_by_library') or {}).items()) or '-'}); "
          + (f"peaks: {mach['gemm_method']}; " if mach.get("gemm_method") else "")
          + f"model cost {m.get('gflops_per_image')} GFLOPs/image (nominal: the official computation, which our "
          "folded attention and joints-only refinement undercut)",
          f"- {s.get('warmup')} warm-up + {s.get('iters')} timed iterations per cell; inputs: {s.get('inputs', {}).get('description', '-')}",
          f"- device: {s.get('device') or 'cpu'} — every cell, baselines included, ran there"
          + (f"; ONNX Runtime providers: {', '.join(s['providers'])}" if s.get("providers") else ""),
          ""]
    ok = [c for c in rep["cells"] if c["status"] == "ok"]
    L += baseline_lines(rep["cells"], (rep.get("model") or {}).get("official_repo"))
    L += ["## Latency and fidelity", "",
          "Latency per call (one batch) in ms; throughput in images/s; speed-up = throughput ÷ the baseline's "
          "throughput at the same batch (see Baselines), and ÷ our PyTorch fp32 reference's; GFLOP/s is the nominal "
          "model cost × images/s, as a share of the measured GEMM peak of the cell's arithmetic (int8-cpu: the int8 "
          "peak; others: fp32); deviation vs our PyTorch fp32 reference on the same inputs.", "",
          "| cell | backend | precision | batch | p50 | p90 | p99 | mean | img/s | speed-up | vs reference "
          "| GFLOP/s (% of GEMM peak) | vertex mean / max (mm) | joints PA (mm) | peak RSS (MB) |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in ok:
        lat, f = c["latency"], c.get("fidelity") or {}
        v, j = f.get("vertices") or {}, f.get("joints") or {}
        gfs = c.get("achieved_gflops")
        cell_peak = mach.get(PEAK_KEY.get(c["precision"], DEFAULT_PEAK_KEY))
        pct = f" ({100 * gfs / cell_peak:.0f}%{' of int8' if c['precision'] in PEAK_KEY else ''})" \
            if gfs and cell_peak else ""
        gate = " **over gate**" if c.get("fidelity_gate") else ""
        L.append(f"| {c['id']} | {c['backend']} | {c['precision']} | {c['batch']} | {_n(lat['p50_ms'])} | "
                 f"{_n(lat['p90_ms'])} | {_n(lat['p99_ms'])} | {_n(lat['mean_ms'])} | {_n(lat['throughput_ips'], '{:.1f}')} | "
                 f"{_n(c.get('speedup_vs_official'), '{:.2f}×')} | {_n(c.get('speedup_vs_reference'), '{:.2f}×')} | "
                 f"{_n(gfs, '{:.1f}')}{pct} | "
                 f"{_n(v.get('mean_mm'), '{:.3g}')} / {_n(v.get('max_mm'), '{:.3g}')}{gate} | "
                 f"{_n(j.get('pa_mean_mm'), '{:.3g}')} | "
                 f"{_n(c.get('peak_rss_mb'), '{:.0f}')} |")
    over = [c for c in ok if c.get("fidelity_gate")]
    if over:
        L += ["", "### Over the fidelity gate", "",
              "Cells whose vertex error exceeds smpler-export's default `--max-error-mm` for their precision "
              "(an export of that graph would fail):", ""]
        L += [f"- {c['id']}: {c['fidelity_gate']}" for c in over]
    dev = [c for c in ok if c.get("device_latency")]
    if dev:
        L += ["", "### GPU compute (the forward / engine alone, CUDA events) vs host latency", "",
              f"Device memory: {s.get('device_memory_method') or 'in use after the cell'}.", "",
              "| cell | device p50 | device p99 | host p50 | device memory (MB) |", "|---|---:|---:|---:|---:|"]
        L += [f"| {c['id']} | {_n(c['device_latency']['p50_ms'])} | {_n(c['device_latency']['p99_ms'])} | "
              f"{_n(c['latency']['p50_ms'])} | {_n(c.get('device_memory_mb'), '{:.0f}')} |" for c in dev]
    bad = [c for c in rep["cells"] if c["status"] != "ok"]
    if bad:
        L += ["", "## Skipped and failed cells", "", "| cell | status | reason |", "|---|---|---|"]
        L += [f"| {c['id']} | {c['status']} | {c['reason']} |" for c in bad]
    ds = rep.get("dataset")
    if ds:
        L += ["", f"## Dataset: {ds.get('name')} ({ds.get('samples')} samples, `{ds.get('file')}`)", "",
              f"Protocol: {ds.get('protocol', '-')}. Errors in mm.", ""]
        names = ds.get("metrics") or []
        L += ["| cell | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for c in ok:
            dm = c.get("dataset_metrics")
            if dm:
                L.append(f"| {c['id']} | " + " | ".join(_n(dm.get(k)) for k in names) + " |")
    if plots:
        L += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    L += ["", "Percentiles over per-call wall time (host latency: inputs already in host memory, outputs copied back). "
          "The baselines and our reference (torch fp32) are timed together at each batch, one call of each per round, "
          "so a load that comes and goes slows them alike; their peak RSS is their sessions' together. "
          "Peak RSS is the process high-water mark during the cell (reset per cell where Linux allows). "
          f"Schema: `{rep['schema']}` v{rep['schema_version']}.", ""]
    return "\n".join(L)


def write_report(rep: Report | dict, out_dir, plots: bool = True) -> dict:
    """Write report.json, report.md (and PNG plots) into out_dir; return the paths written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OptionError("out_dir", out, "exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    d = rep.finalize().to_dict() if isinstance(rep, Report) else jsonable(rep)
    validate_report(d)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    write_text_atomic(paths["json"], json.dumps(d, indent=2, allow_nan=False) + "\n")
    pngs = []
    if plots:
        from .plots import write_plots

        pngs = write_plots(d, out)
        paths["plots"] = pngs
    write_text_atomic(paths["md"], render_markdown(d, [str(p) for p in pngs]))
    return paths
