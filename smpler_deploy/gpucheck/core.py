"""The self-check's plumbing: step results, the shared context, the runner (time budget) and the report."""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import SmplerError, one_line

SCHEMA = "smpler-deploy/gpu-check"
SCHEMA_VERSION = 1
STATUSES = ("executed", "skipped", "failed")


@dataclass
class StepResult:
    name: str
    status: str  # executed (ran and agreed) | skipped (reason says why) | failed (ran and disagreed, or raised)
    reason: str | None = None
    numbers: dict = field(default_factory=dict)  # errors (mm, abs), latencies (ms), what was loaded
    seconds: float = 0.0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}")
        if self.status != "executed" and not self.reason:
            raise ValueError(f"{self.name}: a {self.status} step needs a reason")


def skipped(name: str, reason: str, **numbers) -> StepResult:
    return StepResult(name, "skipped", reason, numbers)


def judged(name: str, numbers: dict, failures: list[str]) -> StepResult:
    """executed when every comparison held, else failed naming the ones that did not."""
    return StepResult(name, "failed" if failures else "executed", "; ".join(failures) or None, numbers)


def within(failures: list[str], what: str, value: float, limit: float, unit: str = "") -> None:
    """Record a failure unless value <= limit (NaN fails)."""
    if not value <= limit:
        failures.append(f"{what} {value:.3g}{unit} > {limit:g}{unit}")


@dataclass
class CheckContext:
    """What every step may read: the device asked for, why CUDA is unusable (None = usable), the kernel and work
    directories, iterations, the deadline, and artifacts shared between steps (`cache`)."""

    device: str = "cuda"  # cuda | cpu (cpu: the check's own testing; every GPU path is skipped)
    interpret: bool = False  # run the Triton kernels under TRITON_INTERPRET=1 on CPU tensors
    cuda_reason: str | None = None  # why there is no usable GPU at all (None: there is one)
    torch_reason: str | None = None  # why torch cannot use it (None: it can); cuda-python paths may still run
    kernel_dir: Path | None = None
    work_dir: Path = Path("out/check-gpu")
    iters: int = 20
    deadline: float = float("inf")  # time.monotonic() value
    cache: dict = field(default_factory=dict)
    trt_api: object | None = None  # TensorRT/CUDA calls for TensorRTSession (None: the real ones)
    log: Callable[[str], None] = lambda msg: None

    @property
    def cuda(self) -> bool:
        return self.device == "cuda" and self.cuda_reason is None

    @property
    def torch_cuda(self) -> bool:
        return self.cuda and self.torch_reason is None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def run_check(steps, ctx: CheckContext) -> list[StepResult]:
    """Run each step (name, function, estimated seconds) in order. A step that would not fit in the time left
    is skipped, saying so; one that raises is failed with the one-line error; the check always goes on."""
    results = []
    for name, fn, estimate in steps:
        left = ctx.remaining()
        if left < estimate:
            results.append(skipped(name, f"time budget: {max(left, 0):.0f} s left, the step needs ~{estimate:.0f} s"))
            ctx.log(f"{name}: skipped (time budget)")
            continue
        t0 = time.monotonic()
        try:
            r = fn(ctx)
        except SmplerError as e:
            r = StepResult(name, "failed", str(e))
        except Exception as e:  # noqa: BLE001 - a broken path is a finding, not the end of the check
            r = StepResult(name, "failed", one_line(e))
        r.name, r.seconds = name, round(time.monotonic() - t0, 2)
        results.append(r)
        ctx.log(f"{name}: {r.status}" + (f" ({r.reason})" if r.reason else ""))
    return results


def report_dict(results: list[StepResult], ctx: CheckContext, machine: dict, command: str, seconds: float) -> dict:
    from .. import __version__
    from ..fidelity import jsonable

    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    return jsonable({
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "smpler-deploy", "version": __version__}, "command": command,
        "device": ctx.device,
        "cuda": "not asked (--device cpu)" if ctx.device != "cuda" else ctx.cuda_reason or "usable",
        "torch_cuda": "not asked (--device cpu)" if ctx.device != "cuda" else ctx.torch_reason or "usable",
        "interpret": ctx.interpret,
        "kernel_dir": str(ctx.kernel_dir) if ctx.kernel_dir else None, "seconds": round(seconds, 1),
        "machine": machine, "counts": counts, "steps": [asdict(r) for r in results],
    })


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def render_markdown(d: dict) -> str:
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, sm {g.get('compute_capability')})"
                     for g in d["machine"].get("gpus") or []) or "none"
    libs = ", ".join(f"{k} {v}" for k, v in (d["machine"].get("libraries") or {}).items() if v)
    c = d["counts"]
    L = ["# smpler-check-gpu", "",
         f"- created {d['created']} with smpler-deploy {d['tool']['version']}; command: `{d['command']}`",
         f"- device asked: {d['device']}; CUDA: {d['cuda']}; GPU: {gpus}",
         f"- CPU: {d['machine'].get('cpu')}; libraries: {libs}",
         f"- {c['executed']} executed, {c['skipped']} skipped, {c['failed']} failed in {d['seconds']} s", "",
         "Latencies are medians of CUDA-event times on this GPU (the interpreter's, when marked, mean nothing "
         "about speed); errors are against the PyTorch fp32 path on the CPU unless the step says otherwise.", "",
         "| step | status | reason | numbers | s |", "|---|---|---|---|---:|"]
    for s in d["steps"]:
        nums = "; ".join(f"{k}: {_fmt(v)}" for k, v in s["numbers"].items())
        L.append(f"| {s['name']} | {s['status']} | {s['reason'] or ''} | {nums} | {s['seconds']:.1f} |")
    L += ["", f"Schema: `{d['schema']}` v{d['schema_version']}.", ""]
    return "\n".join(L)


def write_report(d: dict, out_dir: Path) -> dict:
    """report.json and report.md, each written atomically (temp file, then rename)."""
    from ..fileio import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    write_text_atomic(paths["json"], json.dumps(d, indent=2, allow_nan=False) + "\n")
    write_text_atomic(paths["md"], render_markdown(d))
    return paths
