"""smpler-export's flags -> `spec.ExportSpec`, for every --format: the one table of which flag applies where
(`FLAGS`), each refusal written once, and the library's field errors given their flag names (`common.FIELD_FLAGS`).

Every check runs before any work (no model, no TensorRT needed except to list the valid --sm targets, which
imports the flavour and so also fails fast when it is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import OptionError, SmplerError
from ..precision import GRAPH_KINDS, INT8_TARGETS, Precision
from ..spec import EngineOptions, ExportSpec
from .common import flag_message, kernel_dir_arg

FORMATS = ("onnx", "engine", "triton")
_BUILT_ENGINE = "--format triton takes a built engine with --engine"


@dataclass(frozen=True)
class Flag:
    flag: str
    formats: tuple[str, ...] = FORMATS  # the --format values it applies to
    exporting: bool = False  # only when this command exports the graph (not with --onnx / --engine)
    why: dict | None = None  # --format -> why it does not apply there (said with the refusal)


_ENGINE = {"formats": ("engine",), "why": {"triton": _BUILT_ENGINE}}
# Namespace key -> where the flag applies. Not here: --batch/--force/-o (everywhere), --tf32 (on by default, so
# "given" cannot be told from the default).
FLAGS = {
    "variant": Flag("--variant", exporting=True),
    "checkpoint": Flag("--checkpoint", exporting=True),
    "smpl_model": Flag("--smpl-model", exporting=True),
    "h36m_regressor": Flag("--h36m-regressor", exporting=True),
    "calib": Flag("--calib", exporting=True),
    "target": Flag("--target", exporting=True),
    "plugins": Flag("--plugins", ("onnx", "engine"), exporting=True, why={
        "triton": "plugin graphs and engines need smpler-deploy's Python TensorRT plugins inside Triton's process; "
                  "export without --plugins"}),
    "max_error_mm": Flag("--max-error-mm", ("onnx", "engine"), exporting=True,
                         why={"triton": "--format triton measures no fidelity"}),
    "onnx": Flag("--onnx", ("engine", "triton")),
    "sm": Flag("--sm", **_ENGINE),
    "trt": Flag("--trt", **_ENGINE),
    "timing_cache": Flag("--timing-cache", **_ENGINE),
    "builder_optimization_level": Flag("--builder-optimization-level", **_ENGINE),
    "mem_pool_size": Flag("--mem-pool-size", **_ENGINE),
    "version_compatible": Flag("--version-compatible", **_ENGINE),
    "hardware_compatibility_level": Flag("--hardware-compatibility-level", **_ENGINE),
    "kernel_dir": Flag("--kernel-dir", ("onnx", "engine"), why={"triton": _BUILT_ENGINE}),
    "engine": Flag("--engine", ("triton",)),
    "instances": Flag("--instances", ("triton",)),
    "ensemble": Flag("--ensemble", ("triton",)),
    "triton_device": Flag("--triton-device", ("triton",)),
}


def _given(a, key: str) -> bool:
    return getattr(a, key, None) not in (None, False)


def _source(a) -> str | None:
    """The already-built input, as the user named it (--onnx or triton's --engine), or None when exporting."""
    if getattr(a, "onnx", None):
        return f"--onnx {a.onnx}"
    if getattr(a, "engine", None):
        return f"--engine {a.engine}"
    return None


def refuse_misplaced(a) -> None:
    """Each flag given where it does not apply is refused here, the same way for every --format."""
    for key, f in FLAGS.items():
        if _given(a, key) and a.format not in f.formats:
            why = (f.why or {}).get(a.format)
            only = f"{f.flag}: applies to --format {' or '.join(f.formats)} only"
            raise SmplerError(only + (f"; {why}" if why else ""))
    src = _source(a)
    for key, f in FLAGS.items():
        if src and f.exporting and _given(a, key):
            done = "exported (its metadata says how)" if a.onnx else "built"
            raise SmplerError(f"{f.flag}: applies when exporting; {src} is already {done}")


def precision_from_flags(precision: str | None, target: str | None) -> Precision:
    """smpler-export's --precision and --target: --target only with int8 (default trt)."""
    kind = precision or "fp32"
    if kind not in GRAPH_KINDS:
        raise SmplerError(f"--precision {kind}: expected one of {', '.join(GRAPH_KINDS)}")
    if target is not None and kind != "int8":
        raise SmplerError(f"--target {target}: applies to --precision int8 only (got --precision {kind})")
    if target is not None and target not in INT8_TARGETS:
        raise SmplerError(f"--target {target}: expected one of {', '.join(INT8_TARGETS)}")
    return Precision(kind, (target or "trt") if kind == "int8" else None)


def _given_artifact(a) -> tuple[Precision | None, str | None]:
    """(precision, variant) of what --onnx / --engine hold (a different --precision is refused), else (None, None)."""
    variant = None
    if a.onnx:
        from ..artifacts import onnx_info

        info = onnx_info(a.onnx, f"--onnx {a.onnx}")
        have, variant = info.precision, info.variant
    elif getattr(a, "engine", None):
        from ..artifacts import engine_info, engine_precision

        have = engine_precision(engine_info(a.engine, f"--engine {a.engine}"), f"--engine {a.engine}")
    else:
        return None, None
    if a.precision is not None and a.precision != have.kind:
        raise SmplerError(f"--precision {a.precision}: {_source(a)} is a {have} graph; precision lives in the graph, "
                          f"so drop --precision or export a {a.precision} graph")
    return have, variant


def export_spec(a) -> ExportSpec:
    """smpler-export's argparse namespace -> ExportSpec, every flag checked; option errors name their flag."""
    try:
        return _export_spec(a)
    except OptionError as e:
        raise SmplerError(flag_message(e)) from None


def _export_spec(a) -> ExportSpec:
    from ..outputs import parse_batch

    refuse_misplaced(a)
    kernel_dir = None if a.format == "triton" else kernel_dir_arg(a)  # a given --kernel-dir holds an index
    batch = parse_batch(a.batch)
    out = Path(a.output)
    if a.format == "onnx" and out.suffix.lower() != ".onnx":
        raise SmplerError(f"-o {out}: expected a .onnx file name for --format onnx")
    if a.format == "engine" and out.suffix.lower() == ".onnx":
        raise SmplerError(f"-o {out}: --format engine writes an engine; name it .engine (the graph goes beside it)")
    if a.format == "triton":
        return _triton_spec(a, out, batch)
    opts = EngineOptions(batch=batch, timing_cache=a.timing_cache,
                         builder_optimization_level=a.builder_optimization_level, mem_pool_size=a.mem_pool_size,
                         version_compatible=a.version_compatible,
                         hardware_compatibility_level=a.hardware_compatibility_level,
                         tf32=getattr(a, "tf32", None) is not False)
    from ..engine.options import check_values

    opts = check_values(opts)  # before the graph is read: a bad value is refused first
    have, variant = _given_artifact(a)
    precision = have or precision_from_flags(a.precision, a.target)
    variant = variant or a.variant or "smpler"
    _check_precision_flags(a, precision)
    from ..fidelity import gate_limits

    max_error = getattr(a, "max_error_mm", None)
    if max_error is not None and (a.no_fidelity or a.plugins):
        skip = "--no-fidelity" if a.no_fidelity else "--plugins"
        raise SmplerError(f"--max-error-mm: the gate needs the fidelity check, which {skip} skips (drop one of them)")
    limits = None if a.onnx or a.no_fidelity or a.plugins else gate_limits(max_error, precision)
    if a.format == "engine":
        precision.require_buildable(f"--onnx {a.onnx}" if a.onnx else "--target cpu")
        from ..engine.options import resolve
        from ..trt.importer import import_trt

        trt, flavour = import_trt(a.trt)  # fail fast, before minutes of export, if no flavour is installed
        from ..engine.targets import parse_sms

        opts = resolve(replace(opts, sms=parse_sms(a.sm)), trt, flavour)
    onnx_path = Path(a.onnx) if a.onnx else (out if a.format == "onnx" else out.with_suffix(".onnx"))
    return ExportSpec(format=a.format, precision=precision, output=out, onnx=onnx_path, onnx_given=bool(a.onnx),
                      batch=batch, plugins=bool(a.plugins), variant=variant, checkpoint=a.checkpoint,
                      smpl_model=a.smpl_model, h36m_regressor=a.h36m_regressor, calib=a.calib,
                      fidelity=not a.no_fidelity, max_error_mm=limits, force=a.force, engine=opts,
                      kernel_dir=kernel_dir)


def _check_precision_flags(a, precision: Precision | None) -> None:
    if a.calib and (precision is None or precision.kind != "int8"):
        raise SmplerError("--calib applies to --precision int8 only")
    if a.plugins and precision is not None and precision.kind == "int8":
        raise SmplerError("--plugins with --precision int8: the int8 graph is calibrated with ONNX Runtime, which "
                          "cannot run plugin nodes; use fp32/fp16 with --plugins")


def _triton_spec(a, out: Path, batch) -> ExportSpec:
    """--format triton: a repository from an exported graph, --onnx or --engine (serve/export_triton.py)."""
    from ..fileio import check_output_tree
    from ..serve.repository import RepoOptions, owns_repo_entry

    if a.instances is not None and a.instances < 1:
        raise SmplerError(f"--instances {a.instances}: expected 1 or more")
    if out.suffix.lower() in (".onnx", ".engine", ".plan"):
        raise SmplerError(f"-o {out}: --format triton writes a model repository directory, not a {out.suffix} file")
    check_output_tree(out, a.force, "-o", owns_repo_entry)  # a file, missing parent, read-only or (without
    # --force) non-empty directory fails now, before the export
    if a.onnx or a.engine:
        if a.precision is not None:
            _given_artifact(a)  # a --precision other than the graph's (the engine's) is refused
        precision = None  # nothing to export
    else:
        precision = precision_from_flags(a.precision, a.target)
    _check_precision_flags(a, precision)
    lo, opt, hi = batch
    repo = RepoOptions(max_batch=hi, preferred=(opt, hi), instances=a.instances or 1,
                       onnx_device=a.triton_device or "gpu", ensemble=a.ensemble)
    return ExportSpec(format="triton", precision=precision, output=out, onnx=Path(a.onnx) if a.onnx else None,
                      onnx_given=bool(a.onnx or a.engine), batch=batch, variant=a.variant or "smpler",
                      checkpoint=a.checkpoint, smpl_model=a.smpl_model, h36m_regressor=a.h36m_regressor,
                      calib=a.calib, fidelity=False, force=a.force,
                      engine_file=Path(a.engine) if a.engine else None, repo=repo)
