"""smpler-export's flags parsed once into a typed request (`ExportSpec`): the precision (`precision.Precision`),
GPU targets (`engine.targets`), engine options and the files it writes.

Every check runs here before any work, so a bad value is a one-line error in a second, not a traceback after
minutes of export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .engine.targets import DEFAULT_SMS, parse_sms, valid_sms
from .errors import SmplerError
from .precision import Precision


# ---------------------------------------------------------------- smpler-export


@dataclass
class EngineOptions:
    flavour: str | None = None
    sms: list[int] | None = None
    timing_cache: Path | None = None
    builder_optimization_level: int | None = None
    mem_pool_size: str | None = None
    version_compatible: bool = False
    hardware_compatibility_level: str | None = None
    tf32: bool = True  # fp32 layers may use TF32 tensor cores, as trtexec (--no-tf32 = trtexec --noTF32)


@dataclass
class ExportSpec:
    """Everything smpler-export was asked to do, validated: which files it writes and from what."""

    format: str  # onnx | engine
    precision: Precision
    output: Path  # the .onnx (format onnx) or the .engine
    onnx: Path  # the graph: written (format onnx, or beside the engine) or read (--onnx)
    onnx_given: bool  # --onnx: build from an existing graph, no export
    batch: tuple[int, int, int]
    plugins: bool = False
    variant: str = "smpler"
    checkpoint: str | None = None
    smpl_model: str | None = None
    h36m_regressor: str | None = None
    calib: str | None = None
    fidelity: bool = True
    max_error_mm: tuple[float, float] | None = None  # fidelity gate (vertex mean, max mm); None: no gate
    force: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)

    def output_files(self) -> list[tuple[Path, str]]:
        """Every file this export writes, with the flag that names it (claimed before any work)."""
        from .trt.manifest import layers_path, manifest_path

        files: list[tuple[Path, str]] = []
        if not self.onnx_given:
            files.append((self.onnx, "-o" if self.format == "onnx" else "-o (ONNX beside the engine)"))
            if self.fidelity and not self.plugins:
                files.append((fidelity_path(self.onnx), "-o (fidelity report beside the graph)"))
        if self.format == "engine":
            files += [(self.output, "-o"), (manifest_path(self.output), "-o (engine manifest)"),
                      (layers_path(self.output), "-o (engine layer records)")]
        return files


def fidelity_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".fidelity.json")


ENGINE_ONLY = {"sm": "--sm", "trt": "--trt", "timing_cache": "--timing-cache",
               "builder_optimization_level": "--builder-optimization-level", "mem_pool_size": "--mem-pool-size",
               "version_compatible": "--version-compatible",
               "hardware_compatibility_level": "--hardware-compatibility-level"}
EXPORT_ONLY = {"calib": "--calib", "target": "--target", "checkpoint": "--checkpoint", "smpl_model": "--smpl-model",
               "h36m_regressor": "--h36m-regressor", "variant": "--variant", "max_error_mm": "--max-error-mm"}


def export_spec(a) -> ExportSpec:
    """smpler-export's argparse namespace -> ExportSpec, every flag checked (no model, no TensorRT needed except
    to list the valid --sm targets, which imports the flavour and so also fails fast when it is missing)."""
    from .outputs import parse_batch

    if a.format == "onnx":
        given = [flag for key, flag in ENGINE_ONLY.items() if getattr(a, key, None) not in (None, False)]
        if given:
            raise SmplerError(f"{given[0]}: applies to --format engine only")
        if a.onnx:
            raise SmplerError("--onnx applies to --format engine only")
    if a.onnx:
        given = [flag for key, flag in EXPORT_ONLY.items() if getattr(a, key, None) not in (None, False)]
        if a.plugins:
            given.append("--plugins")
        if given:
            raise SmplerError(f"{given[0]}: applies when exporting; --onnx {a.onnx} is already exported "
                              "(its metadata says how)")
    if a.builder_optimization_level is not None and not 0 <= a.builder_optimization_level <= 5:
        raise SmplerError(f"--builder-optimization-level {a.builder_optimization_level}: expected 0..5")
    batch = parse_batch(a.batch)
    out = Path(a.output)
    if a.format == "onnx" and out.suffix.lower() != ".onnx":
        raise SmplerError(f"-o {out}: expected a .onnx file name for --format onnx")
    if a.format == "engine" and out.suffix.lower() == ".onnx":
        raise SmplerError(f"-o {out}: --format engine writes an engine; name it .engine (the graph goes beside it)")

    if a.onnx:
        from .artifacts import onnx_info

        info = onnx_info(a.onnx, "--onnx")
        precision = info.precision
        if a.precision is not None and a.precision != precision.kind:
            raise SmplerError(f"--precision {a.precision}: --onnx {a.onnx} is a {precision} graph; precision lives "
                              f"in the graph, so drop --precision or export a {a.precision} graph")
        variant = info.variant
    else:
        precision = Precision.from_flags(a.precision, a.target)
        variant = a.variant or "smpler"
    if a.calib and precision.kind != "int8":
        raise SmplerError("--calib applies to --precision int8 only")
    if a.plugins and precision.kind == "int8":
        raise SmplerError("--plugins with --precision int8: the int8 graph is calibrated with ONNX Runtime, which "
                          "cannot run plugin nodes; use fp32/fp16 with --plugins")
    from .fidelity import gate_limits

    max_error = getattr(a, "max_error_mm", None)
    if max_error is not None and (a.no_fidelity or a.plugins):
        skip = "--no-fidelity" if a.no_fidelity else "--plugins"
        raise SmplerError(f"--max-error-mm: the gate needs the fidelity check, which {skip} skips (drop one of them)")
    limits = None if a.onnx or a.no_fidelity or a.plugins else gate_limits(max_error, precision)
    opts = EngineOptions(timing_cache=Path(a.timing_cache) if a.timing_cache else None,
                         builder_optimization_level=a.builder_optimization_level, mem_pool_size=a.mem_pool_size,
                         version_compatible=a.version_compatible,
                         hardware_compatibility_level=a.hardware_compatibility_level,
                         tf32=getattr(a, "tf32", None) is not False)
    if a.format == "engine":
        if not precision.buildable:
            src = f"--onnx {a.onnx}" if a.onnx else "--target cpu"
            raise SmplerError(f"{src}: int8-cpu is ONNX Runtime's layout (non-zero zero points TensorRT refuses); "
                              "build engines from --precision int8 --target trt")
        from .engine import builder as B

        trt, opts.flavour = B.import_trt(a.trt)  # fail fast, before minutes of export, if no flavour is installed
        B.check_engine_options(opts)
        if opts.flavour == "tensorrt-rtx":
            opts.sms = parse_sms(a.sm, valid_sms(trt)) or list(DEFAULT_SMS)
        elif a.sm:
            raise SmplerError("--sm applies to --trt tensorrt-rtx only; --trt tensorrt builds for the local GPU")
    onnx_path = Path(a.onnx) if a.onnx else (out if a.format == "onnx" else out.with_suffix(".onnx"))
    return ExportSpec(format=a.format, precision=precision, output=out, onnx=onnx_path, onnx_given=bool(a.onnx),
                      batch=batch, plugins=bool(a.plugins), variant=variant, checkpoint=a.checkpoint,
                      smpl_model=a.smpl_model, h36m_regressor=a.h36m_regressor, calib=a.calib,
                      fidelity=not a.no_fidelity, max_error_mm=limits, force=a.force, engine=opts)
