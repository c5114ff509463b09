"""Per-layer precision of an engine, from the builder's `Layers:` dump (no GPU needed).

With `ProfilingVerbosity.DETAILED` and a VERBOSE logger, TensorRT-RTX logs one message at the end of
`build_serialized_network`: `Layers:` (one `Name: ..., LayerType: ...` line per engine layer), then
`I/O Tensors:` and `Engine Metadata:`. An `IEngineInspector` would need a deserialized engine, i.e. a GPU.
The format is undocumented; unknown lines are skipped so a format change yields fewer records, not a crash.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

# Dump datatype names -> our precision names.
DTYPE_NAMES = {
    "Float": "fp32",
    "Half": "fp16",
    "BFloat16": "bf16",
    "Int8": "int8",
    "FP8": "fp8",
    "Int4": "int4",
    "FP4": "fp4",
    "Int32": "int32",
    "Int64": "int64",
    "Bool": "bool",
    "UInt8": "uint8",
}
# Precisions a layer "runs in"; anything else (int32 index math, bool masks) counts as "other".
PRECISIONS = ("int8", "fp8", "fp16", "bf16", "fp32")
# LayerType -> what a user calls it (TensorRT-RTX dump names, then TensorRT inspector names).
KIND_NAMES = {"correlation": "conv", "custom_layer": "plugin", "_gemm_mha_v2": "mha",
              "CaskConvolution": "conv", "CaskGemmConvolution": "conv", "CaskFlattenConvolution": "conv",
              "CaskDeconvolution": "conv", "CaskGemmMatrixMultiply": "gemm", "CaskMatrixMultiply": "gemm",
              "MatrixMultiply": "gemm", "PluginV3": "plugin", "PluginV2": "plugin", "Myelin": "kgen"}

_LINE = re.compile(
    r"Name: (?P<name>.*?), LayerType: (?P<type>[\w.]+), Inputs: \[(?P<inputs>.*?)\], "
    r"Constants: \[(?P<consts>.*?)\], Outputs: \[(?P<outputs>.*?)\], TacticName: (?P<tactic>.*?), "
    r"StreamId: \d+, Metadata:\s?(?P<meta>.*)$"
)
_DTYPE = re.compile(r"Datatype: (\w+)")
_ONNX = re.compile(r"\[ONNX Layer: (.*?)\]")


@dataclass
class LayerRecord:
    name: str
    type: str  # LayerType as printed: correlation, gemm, kgen, custom_layer, ...
    inputs: list[str]  # dtypes, our names (fp32, fp16, int8, ...)
    constants: list[str]
    outputs: list[str]
    onnx_layers: list[str] = field(default_factory=list)
    tactic: str = ""

    @property
    def kind(self) -> str:
        return KIND_NAMES.get(self.type, self.type)

    @property
    def precision(self) -> str:
        """Dtype of the main input, else of the weights; int8/fp8 wins if either is quantized."""
        main = self.inputs[:1] + self.constants[:1]
        for p in ("int8", "fp8", "int4", "fp4"):
            if p in main:
                return p
        if not main:
            return "none"  # shape calls, pure data movement
        return main[0] if main[0] in PRECISIONS else "other"


def _dtypes(section: str) -> list[str]:
    return [DTYPE_NAMES.get(d, d.lower()) for d in _DTYPE.findall(section)]


def find_layers_dump(messages) -> str | None:
    """The `Layers:` message among captured log messages (last one wins)."""
    found = None
    for m in messages:
        first = m.split("\n", 1)[0]
        if re.fullmatch(r"\s*(\[\w\] )?Layers:\s*", first):  # Polygraphy prefixes "[X] "
            found = m
    return found


def parse_layers(dump: str | None) -> list[LayerRecord]:
    """Per-layer records from a `Layers:` dump; [] when there is none."""
    if not dump:
        return []
    records = []
    for line in dump.splitlines():
        m = _LINE.search(line.strip())
        if not m:
            continue
        records.append(
            LayerRecord(
                name=m["name"],
                type=m["type"],
                inputs=_dtypes(m["inputs"]),
                constants=_dtypes(m["consts"]),
                outputs=_dtypes(m["outputs"]),
                onnx_layers=_ONNX.findall(m["meta"]),
                tactic=m["tactic"],
            )
        )
    return records


def summarize(records: list[LayerRecord]) -> dict:
    """Counts by precision and by (kind, precision); JSON-ready, stored in the manifest."""
    by_precision = Counter(r.precision for r in records)
    by_kind: dict[str, Counter] = {}
    for r in records:
        by_kind.setdefault(r.kind, Counter())[r.precision] += 1
    return {
        "available": bool(records),
        "layers": len(records),
        "by_precision": dict(by_precision),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "int8_compute": sum(1 for r in records if r.precision == "int8" and r.kind in ("conv", "gemm", "mha")),
    }


# Inspector "Format/Datatype" strings, e.g. "Row major linear FP32", "Channel major FP16 format where channel % 8
# == 0", "Channel major INT8 format where channel % 32 == 0"; "Weights": {"Type": "Half", ...}.
_INSPECTOR_DTYPES = (("INT8", "int8"), ("FP8", "fp8"), ("BF16", "bf16"), ("FP16", "fp16"), ("Half", "fp16"),
                     ("FP32", "fp32"), ("Float", "fp32"), ("INT32", "int32"), ("Int32", "int32"), ("INT64", "int64"),
                     ("Int8", "int8"), ("Bool", "bool"))


def _inspector_dtype(text: str) -> str:
    return next((ours for token, ours in _INSPECTOR_DTYPES if token in str(text)), "other")


def parse_inspector_json(text: str) -> list[LayerRecord]:
    """Records from `IEngineInspector.get_engine_information(LayerInformationFormat.JSON)` of a DETAILED build
    (full TensorRT on a GPU, whose builder log has no `Layers:` dump)."""
    import json

    try:
        layers = json.loads(text).get("Layers", [])
    except (ValueError, AttributeError):
        return []
    records = []
    for layer in layers:
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY builds list plain names
            continue
        weights = [layer[k]["Type"] for k in ("Weights",) if isinstance(layer.get(k), dict) and "Type" in layer[k]]
        records.append(LayerRecord(
            name=str(layer.get("Name", "")),
            type=str(layer.get("LayerType", "")),
            inputs=[_inspector_dtype(t.get("Format/Datatype", "")) for t in layer.get("Inputs", [])],
            constants=[_inspector_dtype(w) for w in weights],
            outputs=[_inspector_dtype(t.get("Format/Datatype", "")) for t in layer.get("Outputs", [])],
            onnx_layers=_ONNX.findall(str(layer.get("Metadata", ""))),
            tactic=str(layer.get("TacticName", "")),
        ))
    return records


def records_to_json(records: list[LayerRecord]) -> list[dict]:
    return [asdict(r) | {"kind": r.kind, "precision": r.precision} for r in records]


def format_layer_summary(summary: dict) -> str:
    """A small table: one row per layer kind, one column per precision seen."""
    if not summary.get("available"):
        return "layer summary: not available (no `Layers:` dump and no engine inspector for this build)"
    cols = [p for p in PRECISIONS + ("other", "none") if summary["by_precision"].get(p)]
    rows = [["kind", *cols, "total"]]
    for kind, counts in summary["by_kind"].items():
        rows.append([kind, *(str(counts.get(c, 0) or "") for c in cols), str(sum(counts.values()))])
    rows.append(["all", *(str(summary["by_precision"].get(c, 0)) for c in cols), str(summary["layers"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [f"engine layers by precision ({summary['layers']} layers; main input/weights dtype):", fmt(rows[0])]
    lines += [fmt(r) for r in rows[1:]]
    return "\n".join(lines)


def precision_warning(summary: dict, precision: str | None) -> str | None:
    """A one-line warning when the engine does not run in the precision its ONNX claims (e.g. int8 fell back)."""
    if not summary.get("available") or precision not in ("int8", "fp16"):
        return None
    if precision == "int8" and summary["int8_compute"] == 0:
        return "warning: int8 graph, but no convolution/GEMM runs in int8 (check the Q/DQ placement)"
    if precision == "fp16" and not summary["by_precision"].get("fp16"):
        return "warning: fp16 graph, but no layer runs in fp16"
    return None
