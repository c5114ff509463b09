"""What a file handed to a command is: an SMPLer ONNX graph or engine, read from its metadata and I/O before any
work, so a wrong file is a one-line error instead of a wrong build or a failure minutes later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SmplerError, opt
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


def onnx_info(path, where: str | None = None) -> GraphInfo:
    """Refuse anything but a graph smpler-export wrote: readable ONNX, our metadata, our input and outputs.
    `where`: what the errors name (default: the path; a command passes its flag too)."""
    p = Path(path)
    where = where or str(p)
    if not p.is_file():
        raise SmplerError(f"{where}: file not found")
    model = read_header(p, where)
    meta = metadata(model)
    if not meta.get("producer", "").startswith("smpler-deploy") or meta.get("variant") not in VARIANTS:
        raise SmplerError(f"{where}: not an SMPLer graph (no smpler-deploy metadata; export it with smpler-export)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise SmplerError(f"{where}: not an SMPLer graph (inputs {inputs}, outputs {outputs}; expected "
                          f"[{INPUT_NAME}] -> {', '.join(OUTPUT_NAMES)})")
    precision = Precision.from_metadata(meta, where)
    return GraphInfo(p, meta["variant"], precision, meta.get("plugins") == "true", meta)


def engine_info(path, where: str | None = None) -> dict:
    """An engine file with a valid manifest that says it is an SMPLer engine; returns the manifest."""
    from .trt.manifest import read_manifest

    p = Path(path)
    where = where or str(p)
    if not p.is_file():
        raise SmplerError(f"{where}: file not found")
    m = read_manifest(p)
    outs = [o["name"] for o in m["outputs"]]
    ins = [i["name"] for i in m["inputs"]]
    if m.get("variant") not in VARIANTS or ins != [INPUT_NAME] or outs != list(OUTPUT_NAMES):
        raise SmplerError(f"{where}: not an SMPLer engine (variant {m.get('variant')!r}, inputs {ins}, outputs "
                          f"{outs}); build it with smpler-export (format engine)")
    return m


def engine_precision(manifest: dict, where: str) -> Precision:
    """The precision an engine's manifest records (its graph's; an engine's int8 is TensorRT's layout)."""
    return Precision.from_metadata({"precision": manifest.get("precision") or "fp32"}, where)


def engine_batch_range(manifest: dict) -> tuple[int, int]:
    """(min, max) batch of the engine's optimization profile (its single input's dim 0)."""
    prof = manifest["profiles"][0][INPUT_NAME]
    return int(prof["min"][0]), int(prof["max"][0])


def artifact_facts(path, kind: str, where: str | None = None) -> tuple[Precision, str]:
    """(precision, variant) a graph (kind "onnx") or an engine (kind "engine") carries."""
    if kind == "engine":
        m = engine_info(path, where)
        return engine_precision(m, where or str(path)), m["variant"]
    info = onnx_info(path, where)
    return info.precision, info.variant


def check_bench_artifacts(onnx: dict, engines: dict, variant: str, flags: dict | None = None) -> None:
    """smpler-bench, before any baseline runs: every graph / engine (`{Precision: path}`) exists, is an SMPLer
    graph / engine of the cell's precision and of the benchmarked variant. `flags`: what the caller calls the
    files and the variant (keys "onnx", "engine", "variant"; default the options' names, `errors.opt`, which a
    command shows as its flags)."""
    flags = {k: opt(k) for k in ("onnx", "engine", "variant")} | (flags or {})
    for kind, files in (("onnx", onnx), ("engine", engines)):
        flag = flags[kind]
        for prec, path in files.items():
            got, got_variant = artifact_facts(path, kind, f"{flag} {path}")
            if got != prec:
                raise SmplerError(f"{flag} {prec}={path}: the file carries precision {got}; pass it as {got}={path}")
            if got_variant != variant:
                raise SmplerError(f"{flag} {prec}={path}: a {got_variant} {'graph' if kind == 'onnx' else 'engine'}, "
                                  f"but the benchmark is {flags['variant']} {variant}")
