"""smpler-bench: the benchmark matrix -> report.json, report.md and plots.

  smpler-bench --backends torch,onnxruntime,tensorrt --precisions fp32,fp16,int8 --batch 1,8 \
      --iters 50 --warmup 5 [--threads N] [--onnx PREC=PATH,...] [--engine PREC=PATH,...] \
      [--device cpu|cuda [--provider cuda,tensorrt] [--no-cuda-graphs] [--trt-cache DIR] [--trt-fp16]] \
      [--dataset FILE.npz --images ROOT [--smpl-model PATH]] [--official-repo PATH] --out benchmarks/reports/NAME
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..artifacts import check_bench_artifacts
from ..errors import SmplerError
from ..fileio import check_output_dir, check_output_path, outputs
from .. import __version__
from .common import ArgumentParser, add_kernel_dir_argument, check_positive, cli_main, kernel_dir_arg


REPORT_FILES = ("report.json", "report.md")


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="smpler-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--backends", default="torch,onnxruntime", help="comma list of torch,onnxruntime,tensorrt")
    ap.add_argument("--precisions", default="fp32", help="comma list of fp32,fp16,int8 (TensorRT layout),int8-cpu "
                    "(ONNX Runtime layout),bf16 (torch only)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: every cell, baselines included, on that "
                    "device (cuda: one GPU; CUDA-event compute time and device memory per cell)")
    ap.add_argument("--provider", default=None, help="ONNX Runtime providers, comma list: cpu (default on --device "
                    "cpu), cuda,tensorrt (default on --device cuda; needs onnxruntime-gpu)")
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                    help="--device cuda: add torch CUDA-graph cells (torch-cudagraph/PREC)")
    ap.add_argument("--trt-cache", default=None, help="TensorRT EP engine/timing cache (default CACHE_DIR/ort-trt)")
    ap.add_argument("--trt-fp16", action="store_true", help="TensorRT EP: let TensorRT pick fp16 per layer")
    ap.add_argument("--batch", default="1", help="comma list of batch sizes, e.g. 1,8")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per cell")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up iterations per cell")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for torch/onnxruntime")
    ap.add_argument("--variant", default="smpler", help="smpler (HRNet-W32) or smpler-l (W48)")
    ap.add_argument("--checkpoint", default=None, help="official SMPLer checkpoint (default: seeded untrained)")
    ap.add_argument("--smpl-model", default=None, help="SMPL neutral model (.pkl/.npz); needed for 3DPW MPVE")
    ap.add_argument("--onnx", default=None, help="ONNX files, PREC=PATH or PATH (precision from the file name)")
    ap.add_argument("--engine", default=None, help="TensorRT engines, PREC=PATH or PATH")
    ap.add_argument("--cache-dir", default=None, help="where missing ONNX files are exported (default OUT/cache)")
    ap.add_argument("--dataset", default=None, help="evaluation set FILE.npz (docs/datasets.md)")
    ap.add_argument("--images", default=None, help="image root for --dataset")
    ap.add_argument("--official-repo", default=None, help="a checkout of github.com/xuxy09/SMPLer: its own forward "
                    "(same weights, inputs, threads, device) is timed as the baseline speed-ups divide by")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    add_kernel_dir_argument(ap)  # tensorrt cells, --plugins engines
    ap.add_argument("--out", required=True, help="report directory, e.g. benchmarks/reports/NAME")
    ap.add_argument("--force", action="store_true", help="replace the report in --out (to regenerate a report of "
                                                         "record in place)")
    return ap


def _config(a, argv):
    from ..bench import runner as R
    from ..bench.dataset import body_fn_from_model, load_dataset

    if a.iters < 1 or a.warmup < 0:
        raise SmplerError(f"--iters {a.iters} / --warmup {a.warmup}: need iters >= 1 and warmup >= 0")
    check_positive("--threads", a.threads)
    if a.variant not in R.VARIANTS:
        raise SmplerError(f"--variant {a.variant}: expected one of {', '.join(R.VARIANTS)}")
    out = check_output_dir(a.out, "--out")  # before any work: a file, missing parent or read-only dir fails here
    for name in REPORT_FILES if out.is_dir() else ():  # an existing report is replaced only with --force
        check_output_path(out / name, a.force, "--out")
    cfg = R.BenchConfig(
        backends=R.parse_choices(a.backends, R.BACKENDS, "--backends"),
        precisions=R.parse_precisions(a.precisions, "--precisions"),
        batches=R.parse_batches(a.batch), iters=a.iters, warmup=a.warmup, threads=a.threads, variant=a.variant,
        onnx=R.parse_artifacts(a.onnx, "--onnx"), engines=R.parse_artifacts(a.engine, "--engine"),
        cache_dir=Path(a.cache_dir) if a.cache_dir else out / "cache", seed=a.seed, progress=not a.no_progress,
        command="smpler-bench " + " ".join(shlex.quote(s) for s in argv),
        device=R.parse_choices(a.device, R.DEVICES, "--device")[0],
        providers=R.parse_choices(a.provider, ("cpu", "cuda", "tensorrt"), "--provider") if a.provider else None,
        cuda_graphs=a.cuda_graphs, trt_cache=Path(a.trt_cache) if a.trt_cache else None, trt_fp16=a.trt_fp16,
        kernel_dir=kernel_dir_arg(a))
    R.plan(cfg)  # device/provider/artifact problems: one line now, before the baselines run
    check_bench_artifacts(cfg.onnx, cfg.engines, cfg.variant,  # before any baseline runs
                          {"onnx": "--onnx", "engine": "--engine", "variant": "--variant"})
    for flag, val, key in (("--checkpoint", a.checkpoint, "checkpoint"), ("--smpl-model", a.smpl_model, "smpl_model")):
        if val:
            if not Path(val).is_file():
                raise SmplerError(f"{flag} {val}: file not found")
            cfg.session_kw[key] = val
    if a.checkpoint or a.smpl_model:  # built once now: a bad file fails here, not in each cell after the baselines
        from ..model.checkpoint import build_model

        build_model(a.variant, a.checkpoint, a.smpl_model)
    if a.official_repo:
        from ..bench.official_repo import preflight

        cfg.official_repo = preflight(a.official_repo, a.smpl_model)  # layout and dependencies: one line, now
    if a.images and not a.dataset:
        raise SmplerError("--images: given without --dataset")
    if a.dataset:
        if not a.images:
            raise SmplerError("--dataset: needs --images ROOT (the directory imgname paths are relative to)")
        cfg.dataset, cfg.images_root = load_dataset(a.dataset, a.images), Path(a.images)
        if cfg.dataset.name == "3dpw":
            from ..body.loaders import load_body_model

            if not a.smpl_model:
                raise SmplerError("--dataset is 3dpw: pass --smpl-model (neutral SMPL) for the GT mesh (MPVE)")
            cfg.body_fn, cfg.j_regressor_h36m = body_fn_from_model(load_body_model(a.smpl_model))
    return cfg, out


@cli_main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    kernel_dir_arg(a)  # a given --kernel-dir is checked before any work
    from ..bench.report import write_report
    from ..bench.runner import run_benchmark

    cfg, out = _config(a, argv)
    # The report files are claimed for the whole run (a second smpler-bench into the same --out fails at once);
    # an existing report is replaced only with --force (reports of record are regenerated that way).
    with outputs(*(out / n for n in REPORT_FILES), force=a.force, flag="--out", dirs=[(out, "--out")]):
        rep = run_benchmark(cfg)
        paths = write_report(rep, out, plots=not a.no_plots)
    n_ok = sum(c.status == "ok" for c in rep.cells)
    n_skip = sum(c.status == "skipped" for c in rep.cells)
    n_fail = sum(c.status == "failed" for c in rep.cells)
    print(f"{n_ok} cells measured, {n_skip} skipped, {n_fail} failed")
    print(f"wrote {paths['json']}\nwrote {paths['md']}")
    for p in paths.get("plots", []):
        print(f"wrote {p}")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
