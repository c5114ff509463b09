"""smpler-check-gpu: run every GPU path this machine can and say, for each, executed / skipped (why) / failed.

  smpler-check-gpu [--name NAME | --out DIR] [--kernel-dir DIR] [--budget-s 300] [--iters 20] [--steps a,b]

Paths: the model on CUDA vs CPU (mm); Triton kernels (JIT) vs the torch path; the AOT cubins/PTX through the
plugins' launch code; TensorRTSession's CUDA plumbing (graph capture, replay, regrow); SMPLer engines; ONNX
Runtime CUDA and TensorRT EPs; latency of each. Writes report.json and report.md under
benchmarks/reports/NAME/ (default NAME: gpu-check-<gpu>). `--device cpu --interpret` is the check's own CPU
test mode (the Triton kernels through the interpreter; every GPU path skipped). Exit 1 when a path failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import SmplerError
from .common import ArgumentParser, cli_main

REPORTS = Path("benchmarks/reports")


def build_parser() -> argparse.ArgumentParser:
    from ..gpucheck.steps import STEP_NAMES
    from .common import add_kernel_dir_argument

    ap = ArgumentParser(prog="smpler-check-gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--name", default=None, help="report name: writes benchmarks/reports/NAME/ (default gpu-check-<gpu>)")
    ap.add_argument("--out", default=None, help="report directory (instead of --name)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default); cpu runs no GPU path (the check's own testing)")
    ap.add_argument("--interpret", action="store_true",
                    help="with --device cpu: run the Triton kernel check through Triton's interpreter on CPU tensors")
    add_kernel_dir_argument(ap)
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="time budget in seconds: a step (or engine build) whose estimate does not fit in what is "
                         "left is skipped, saying so; the estimates leave room for the check to end within 6 minutes "
                         "(default 300)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per latency (default 20)")
    ap.add_argument("--steps", default=None, help=f"comma list, default all: {','.join(STEP_NAMES)}")
    ap.add_argument("--work-dir", default=None, help="exported graphs and engines (default OUT/tmp, git-ignored)")
    return ap


def cuda_status() -> tuple[str | None, str | None]:
    """(why there is no usable CUDA device, why torch cannot use one); None = usable."""
    from ..runtime.torch_plan import cuda_unavailable_reason

    torch_reason = cuda_unavailable_reason()
    if torch_reason is None:
        return None, None
    try:
        from cuda.bindings import runtime as rt

        err, n = rt.cudaGetDeviceCount()
        if int(err) == 0 and n > 0:
            return None, torch_reason
        gpu = f"cuda-python sees no device ({err})"
    except ImportError:
        gpu = "cuda-python not installed"
    except Exception as e:  # noqa: BLE001 - no driver: the runtime library fails to load
        gpu = f"cuda-python: {e.__class__.__name__}"
    return f"{torch_reason}; {gpu}", torch_reason


def default_name(gpus: list[dict]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", gpus[0]["name"].lower()).strip("-") if gpus else "no-gpu"
    return f"gpu-check-{slug}"


@cli_main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if a.interpret:
        if a.device != "cpu":
            raise SmplerError("--interpret: runs the Triton kernels on CPU tensors; use it with --device cpu")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (it decides once, at import)
    if a.budget_s <= 0 or a.iters < 1:
        raise SmplerError(f"--budget-s {a.budget_s} / --iters {a.iters}: expected positive numbers")
    if a.name and a.out:
        raise SmplerError("--name and --out: give one (--name NAME writes benchmarks/reports/NAME)")
    if a.name and not re.fullmatch(r"[A-Za-z0-9._-]+", a.name):
        raise SmplerError(f"--name {a.name}: expected letters, digits, '.', '_' or '-'")
    from ..bench.machine import machine_info
    from ..fileio import check_output_dir, outputs
    from ..gpucheck.core import CheckContext, report_dict, run_check, write_report
    from ..gpucheck.steps import STEP_NAMES, STEPS
    from ..plugins.kernel_store import verify_kernel_dir
    from .common import kernel_dir_arg

    steps = STEPS
    if a.steps:
        want = [s.strip() for s in a.steps.split(",") if s.strip()]
        bad = [s for s in want if s not in STEP_NAMES]
        if bad or not want:
            raise SmplerError(f"--steps {a.steps}: expected some of {','.join(STEP_NAMES)}")
        steps = [s for s in STEPS if s[0] in want]
    kernel_dir = kernel_dir_arg(a)  # --kernel-dir, else $SMPLER_KERNEL_DIR, else None (the cache)
    if a.kernel_dir:  # the directory this check vouches for: index, entries and checksums, before any work
        verify_kernel_dir(kernel_dir)
    machine = machine_info(measure_gemm=False)
    out = Path(a.out) if a.out else REPORTS / (a.name or default_name(machine.get("gpus") or []))
    out = check_output_dir(out, "--out")
    t0 = time.monotonic()
    cuda_reason, torch_reason = cuda_status() if a.device == "cuda" else (None, None)
    ctx = CheckContext(device=a.device, interpret=a.interpret, cuda_reason=cuda_reason, torch_reason=torch_reason,
                       kernel_dir=kernel_dir, work_dir=Path(a.work_dir) if a.work_dir else out / "tmp",
                       iters=a.iters, deadline=t0 + a.budget_s, log=lambda m: print(f"  {m}", flush=True))
    command = "smpler-check-gpu " + " ".join(shlex.quote(s) for s in argv)
    with outputs(out / "report.json", out / "report.md", force=True, flag="--out", dirs=[(out, "--out")]):
        results = run_check(steps, ctx)
        paths = write_report(report_dict(results, ctx, machine, command, time.monotonic() - t0), out)
    counts = {s: sum(r.status == s for r in results) for s in ("executed", "skipped", "failed")}
    print(f"{counts['executed']} executed, {counts['skipped']} skipped, {counts['failed']} failed")
    print(f"wrote {paths['json']}\nwrote {paths['md']}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
