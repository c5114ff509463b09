"""What a file handed to a command is: an SMPLer ONNX graph or engine, read from its metadata and I/O before any
work, so a wrong file is a one-line error instead of a wrong build or a failure minutes later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SmplerError
from .export.metadata import metadata, read_header
from .outputs import INPUT_NAME, OUTPUT_NAMES
from .precision import Precision

VARIANTS = ("smpler", "smpler-l")


@dataclass(frozen=True)
class GraphInfo:
    path: Path
    variant: str
    precision: Precision
    plugins: bool
    metadata: dict


def onnx_info(path, flag: str = "--onnx") -> GraphInfo:
    """Refuse anything but a graph smpler-export wrote: readable ONNX, our metadata, our input and outputs."""
    p = Path(path)
    if not p.is_file():
        raise SmplerError(f"{flag} {p}: file not found")
    model = read_header(p, f"{flag} {p}")
    meta = metadata(model)
    if not meta.get("producer", "").startswith("smpler-deploy") or meta.get("variant") not in VARIANTS:
        raise SmplerError(f"{flag} {p}: not an SMPLer graph (no smpler-deploy metadata; export it with smpler-export)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise SmplerError(f"{flag} {p}: not an SMPLer graph (inputs {inputs}, outputs {outputs}; expected "
                          f"[{INPUT_NAME}] -> {', '.join(OUTPUT_NAMES)})")
    precision = Precision.from_metadata(meta, f"{flag} {p}")
    return GraphInfo(p, meta["variant"], precision, meta.get("plugins") == "true", meta)


def engine_info(path, flag: str = "--engine") -> dict:
    """An engine file with a valid manifest that says it is an SMPLer engine; returns the manifest."""
    from .trt.manifest import read_manifest

    p = Path(path)
    if not p.is_file():
        raise SmplerError(f"{flag} {p}: file not found")
    m = read_manifest(p)
    outs = [o["name"] for o in m["outputs"]]
    ins = [i["name"] for i in m["inputs"]]
    if m.get("variant") not in VARIANTS or ins != [INPUT_NAME] or outs != list(OUTPUT_NAMES):
        raise SmplerError(f"{flag} {p}: not an SMPLer engine (variant {m.get('variant')!r}, inputs {ins}, outputs "
                          f"{outs}); build it with smpler-export --format engine")
    return m


def engine_batch_range(manifest: dict) -> tuple[int, int]:
    """(min, max) batch of the engine's optimization profile (its single input's dim 0)."""
    prof = manifest["profiles"][0][INPUT_NAME]
    return int(prof["min"][0]), int(prof["max"][0])


def _precision_variant(path, flag: str) -> tuple[str, str]:
    """(report spelling of the precision, variant) a graph (--onnx) or engine (--engine) carries."""
    if flag == "--engine":
        m = engine_info(path, flag)
        return Precision.from_metadata({"precision": m.get("precision")}, f"{flag} {path}").name, m["variant"]
    info = onnx_info(path, flag)
    return info.precision.name, info.variant


def artifact_precision(path, flag: str) -> str:
    """The report spelling of the precision a graph (--onnx) or engine (--engine) carries."""
    return _precision_variant(path, flag)[0]


def check_bench_artifacts(onnx: dict, engines: dict, variant: str) -> None:
    """smpler-bench, before any baseline runs: every --onnx / --engine file exists, is an SMPLer graph / engine
    of the cell's precision and of the benchmarked variant."""
    for flag, files in (("--onnx", onnx), ("--engine", engines)):
        for prec, path in files.items():
            got, got_variant = _precision_variant(path, flag)
            if got != prec:
                raise SmplerError(f"{flag} {prec}={path}: the file carries precision {got}; pass it as {got}={path}")
            if got_variant != variant:
                raise SmplerError(f"{flag} {prec}={path}: a {got_variant} {'graph' if flag == '--onnx' else 'engine'}, "
                                  f"but the benchmark is --variant {variant}")
