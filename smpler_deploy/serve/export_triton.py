"""`smpler-export --format triton -o REPO`: flags checked, the graph exported (or --onnx / --engine taken), the
repository written all at once (see `repository.py`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import SmplerError
from ..fileio import check_output_tree
from .repository import INFER_MODELS, RepoOptions, owns_repo_entry, write_repository

TRITON_ONLY = {"engine": "--engine", "instances": "--instances", "ensemble": "--ensemble",
               "triton_device": "--triton-device"}
ENGINE_BUILD = {"sm": "--sm", "trt": "--trt", "timing_cache": "--timing-cache",
                "builder_optimization_level": "--builder-optimization-level", "mem_pool_size": "--mem-pool-size",
                "version_compatible": "--version-compatible",
                "hardware_compatibility_level": "--hardware-compatibility-level", "kernel_dir": "--kernel-dir"}
EXPORT_ONLY = {"calib": "--calib", "target": "--target", "checkpoint": "--checkpoint", "smpl_model": "--smpl-model",
               "h36m_regressor": "--h36m-regressor", "variant": "--variant", "precision": "--precision"}


def add_flags(p) -> None:
    p.add_argument("--engine", help="with --format triton: a built engine (its .json manifest beside it) for the "
                                    "tensorrt_plan model; build it with --no-plugins for the GPU Triton runs on")
    p.add_argument("--instances", type=int, help="with --format triton: instances of each inference model (default 1)")
    p.add_argument("--ensemble", choices=list(INFER_MODELS),
                   help="with --format triton: the model the `smpler` ensemble runs (default tensorrt with --engine, "
                        "else onnxruntime; python: the project's session in Triton's Python backend)")
    p.add_argument("--triton-device", choices=["gpu", "cpu"], help="with --format triton: onnxruntime instances "
                                                                  "(default gpu)")


def _given(a, flags: dict) -> list[str]:
    return [flag for key, flag in flags.items() if getattr(a, key, None) not in (None, False)]


def refuse_misplaced(a) -> None:
    """Triton-only flags with another --format are a one-line error."""
    if a.format != "triton" and (given := _given(a, TRITON_ONLY)):
        raise SmplerError(f"{given[0]}: applies to --format triton only")


def export_triton(a, say, load_model) -> int:
    """Everything checked before any work; then export (unless --onnx/--engine) and write the repository."""
    from ..outputs import parse_batch
    from ..precision import Precision

    given = _given(a, ENGINE_BUILD)
    if given:
        raise SmplerError(f"{given[0]}: applies to --format engine; --format triton takes a built engine with --engine")
    if a.plugins:
        raise SmplerError("--plugins with --format triton: plugin graphs and engines need smpler-deploy's Python "
                          "TensorRT plugins inside Triton's process; export without --plugins")
    if getattr(a, "max_error_mm", None) is not None:  # no fidelity is measured here: a gate would check nothing
        raise SmplerError("--max-error-mm: applies to --format onnx/engine (--format triton measures no fidelity)")
    if (a.onnx or a.engine) and (given := _given(a, EXPORT_ONLY)):
        raise SmplerError(f"{given[0]}: applies when exporting; --onnx/--engine are already built")
    if a.instances is not None and a.instances < 1:
        raise SmplerError(f"--instances {a.instances}: expected 1 or more")
    lo, opt, hi = parse_batch(a.batch)
    out = Path(a.output)
    if out.suffix.lower() in (".onnx", ".engine", ".plan"):
        raise SmplerError(f"-o {out}: --format triton writes a model repository directory, not a {out.suffix} file")
    check_output_tree(out, a.force, "-o", owns_repo_entry)  # a file, missing parent, read-only or (without --force) non-empty
    # directory fails now, before the export
    precision = None if (a.onnx or a.engine) else Precision.from_flags(a.precision, a.target)
    if a.calib and (precision is None or precision.kind != "int8"):
        raise SmplerError("--calib applies to --precision int8 only")
    opts = RepoOptions(max_batch=hi, preferred=(opt, hi), instances=a.instances or 1,
                       onnx_device=a.triton_device or "gpu", ensemble=a.ensemble)
    # the graph is exported beside -o (named like fileio's scratch files, so a killed run's is reclaimed)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.{os.getpid()}.", suffix=".stage",
                                     dir=out.parent) as tmp:
        onnx = Path(a.onnx) if a.onnx else None
        if precision is not None:
            from ..export.onnx_export import export_onnx

            calib_images = None
            if a.calib:
                from ..export.int8 import load_calibration_dir

                calib_images = load_calibration_dir(a.calib)
            model = load_model(a)
            onnx = Path(tmp) / "model.onnx"
            res = export_onnx(onnx, precision=precision.kind, model=model, target=precision.target or "trt",
                              calib=a.calib, calib_images=calib_images, batch=(lo, opt, hi), log=say)
            say(f"exported {precision} graph in {res['seconds']:.1f} s (fidelity: run smpler-export -o NAME.onnx "
                "for the table)")
        cfgs = write_repository(out, onnx=onnx, engine=a.engine, opts=opts, force=a.force, log=say)
    step = cfgs["smpler"]["ensemble_scheduling"]["step"][1]["model_name"]
    print(f"wrote {out}: {', '.join(cfgs)} (ensemble 'smpler' runs {step}; max_batch_size "
          f"{cfgs[step]['max_batch_size']})")
    return 0
