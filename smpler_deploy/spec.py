"""What smpler-export was asked to do, as one typed request (`ExportSpec`): the precision (`precision.Precision`),
the engine options (`engine.options.EngineOptions`), the Triton repository options and the files it writes.

The command line becomes an ExportSpec in `cli/export_flags.py` (the only place that knows the flags), every check
before any work, so a bad value is a one-line error in a second, not a traceback after minutes of export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .engine.options import EngineOptions
from .errors import opt
from .precision import Precision

__all__ = ["EngineOptions", "ExportSpec", "fidelity_path"]


@dataclass
class ExportSpec:
    """Everything smpler-export was asked to do, validated: which files it writes and from what."""

    format: str  # onnx | engine | triton
    precision: Precision | None  # None: format triton from an `engine_file` (nothing is exported)
    output: Path  # the .onnx (format onnx), the .engine, or the Triton repository directory
    onnx: Path | None  # the graph: written (format onnx, or beside the engine) or read (`onnx_given`)
    onnx_given: bool  # a graph given (or triton's `engine_file`): build from an existing artifact, no export
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
    kernel_dir: Path | None = None  # the plugins' AOT kernels (None: the smpler-aot cache directory)
    engine_file: Path | None = None  # triton: a built engine for the tensorrt_plan model
    repo: object | None = None  # triton: serve.repository.RepoOptions

    @property
    def exports(self) -> bool:
        """This command exports the graph (no existing graph or engine given)."""
        return not self.onnx_given

    def output_files(self) -> list[tuple[Path, str]]:
        """Every file this export writes, with the option that names it (`output`; claimed before any work)."""
        from .trt.manifest import layers_path, manifest_path

        files: list[tuple[Path, str]] = []
        out = opt("output")  # a command shows its flag
        if not self.onnx_given:
            files.append((self.onnx, out if self.format == "onnx" else f"{out} (ONNX beside the engine)"))
            if self.fidelity and not self.plugins:
                files.append((fidelity_path(self.onnx), f"{out} (fidelity report beside the graph)"))
        if self.format == "engine":
            files += [(self.output, out), (manifest_path(self.output), f"{out} (engine manifest)"),
                      (layers_path(self.output), f"{out} (engine layer records)")]
        return files


def fidelity_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".fidelity.json")
