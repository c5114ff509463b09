"""A precision as one typed value: fp32, fp16, int8 with its Q/DQ layout (TensorRT's or ONNX Runtime's), or bf16
(torch only: no bf16 graph or engine is exported or built).

The report spelling ("fp32", "fp16", "int8" for TensorRT's layout, "int8-cpu" for ONNX Runtime's, "bf16") and the
lists of allowed names are produced and parsed only here. It imports nothing of the package but its errors (and no
torch), so the flags, the exporters, the builder, the sessions, the bench and the artifact checks all take it from
here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SmplerError

KINDS = ("fp32", "fp16", "int8", "bf16")
GRAPH_KINDS = ("fp32", "fp16", "int8")  # what an exported graph's metadata may say
INT8_TARGETS = ("trt", "cpu")  # trt: symmetric Q/DQ TensorRT accepts; cpu: ONNX Runtime's fused uint8 layout
# Report spellings: every one, a graph's (ONNX Runtime / TensorRT cells), torch's.
NAMES = ("fp32", "fp16", "int8", "int8-cpu", "bf16")
GRAPH_NAMES = ("fp32", "fp16", "int8", "int8-cpu")
TORCH_NAMES = ("fp32", "fp16", "bf16")
# Why TensorRT (engines, ONNX Runtime's TensorRT EP) cannot take int8-cpu graphs: the one wording of it.
NOT_BUILDABLE = "int8-cpu is ONNX Runtime's layout (non-zero zero points TensorRT refuses)"
# Why there is no bf16 graph or engine: the one wording of it.
NO_GRAPH = "bf16 is a torch precision (no bf16 ONNX graph is exported, no bf16 engine is built)"


@dataclass(frozen=True)
class Precision:
    kind: str  # fp32 | fp16 | int8 | bf16
    target: str | None = None  # int8 only: trt | cpu

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SmplerError(f"precision {self.kind}: expected one of {', '.join(KINDS)}")
        if (self.kind == "int8") != (self.target is not None) or (self.target and self.target not in INT8_TARGETS):
            raise SmplerError(f"precision {self.kind}/{self.target}: an int8 layout (trt or cpu) goes with int8 only")

    @property
    def name(self) -> str:
        """Report spelling: int8 is TensorRT's layout, int8-cpu ONNX Runtime's."""
        return "int8-cpu" if self.target == "cpu" else self.kind

    def __str__(self) -> str:
        return self.name

    @property
    def runs_in_torch(self) -> bool:
        """The torch backend runs it (fp32, fp16, bf16); int8 lives only in an exported graph."""
        return self.name in TORCH_NAMES

    @property
    def in_graph(self) -> bool:
        """An ONNX graph can carry it (everything but bf16)."""
        return self.name in GRAPH_NAMES

    @property
    def buildable(self) -> bool:
        """TensorRT can build it (it refuses the non-zero zero points of the cpu layout; there is no bf16 graph)."""
        return self.in_graph and self.target != "cpu"

    @property
    def not_buildable_reason(self) -> str | None:
        """Why TensorRT (an engine, ONNX Runtime's TensorRT EP) cannot take it, in the one wording; None if it can."""
        return None if self.buildable else NO_GRAPH if not self.in_graph else f"{NOT_BUILDABLE}; use int8"

    def require_buildable(self, where: str) -> None:
        """The one refusal of the cpu layout (and of bf16) for TensorRT (engine builds from a flag or a graph)."""
        if not self.in_graph:
            raise SmplerError(f"{where}: {NO_GRAPH}")
        if not self.buildable:
            raise SmplerError(f"{where}: {NOT_BUILDABLE}; build engines from an int8 graph with TensorRT's layout "
                              "(smpler-export --precision int8 --target trt)")

    @property
    def not_in_torch_reason(self) -> str | None:
        """Why the torch backend cannot run it, in the one wording; None if it can."""
        if self.runs_in_torch:
            return None
        return (f"the torch backend runs {', '.join(TORCH_NAMES)} ({self.name} is a graph precision: the exported "
                "ONNX carries it; run it with onnxruntime or tensorrt)")

    def require_torch(self, where: str = "precision") -> None:
        if not self.runs_in_torch:
            raise SmplerError(f"{where} {self.name}: {self.not_in_torch_reason}")

    @classmethod
    def parse(cls, text: "str | Precision", flag: str = "precision", allowed: tuple[str, ...] = NAMES) -> "Precision":
        """"fp32" | "fp16" | "bf16" | "int8" (= int8 TensorRT layout) | "int8-cpu" | "int8-trt", or a Precision
        (returned as it is): user text is parsed once, at the boundary. `allowed`: the report spellings the caller
        takes (GRAPH_NAMES, TORCH_NAMES); anything else is refused naming `flag`."""
        if isinstance(text, Precision):
            p = text
        else:
            t = str(text).strip().lower().replace("_", "-")
            p = (cls(t) if t in ("fp32", "fp16", "bf16") else cls("int8", "trt") if t in ("int8", "int8-trt")
                 else cls("int8", "cpu") if t == "int8-cpu" else None)
        if p is None or p.name not in allowed:
            raise SmplerError(f"{flag} {text}: expected one of {', '.join(allowed)}")
        return p

    @classmethod
    def from_metadata(cls, meta: dict, where: str = "graph") -> "Precision":
        """From an exported graph's metadata (`precision`, and `int8_target` for int8)."""
        kind = meta.get("precision")
        if kind not in GRAPH_KINDS:
            raise SmplerError(f"{where}: metadata precision {kind!r} is not one of {', '.join(GRAPH_KINDS)}")
        return cls(kind, meta.get("int8_target") or "trt") if kind == "int8" else cls(kind)


FP32 = Precision("fp32")
