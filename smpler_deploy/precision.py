"""A graph's precision as one typed value: fp32, fp16, or int8 with its Q/DQ layout (TensorRT's or ONNX Runtime's).

The report spelling ("fp32", "fp16", "int8" for TensorRT's layout, "int8-cpu" for ONNX Runtime's) is produced and
parsed only here. It imports nothing of the package but its errors, so the flags, the exporters, the builder,
the sessions and the artifact checks all take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SmplerError

KINDS = ("fp32", "fp16", "int8")
INT8_TARGETS = ("trt", "cpu")  # trt: symmetric Q/DQ TensorRT accepts; cpu: ONNX Runtime's fused uint8 layout
NAMES = ("fp32", "fp16", "int8", "int8-cpu")  # report spelling
# Why TensorRT (engines, ONNX Runtime's TensorRT EP) cannot take int8-cpu graphs: the one wording of it.
NOT_BUILDABLE = "int8-cpu is ONNX Runtime's layout (non-zero zero points TensorRT refuses)"


@dataclass(frozen=True)
class Precision:
    kind: str  # fp32 | fp16 | int8
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
    def buildable(self) -> bool:
        """TensorRT can build it (it refuses the non-zero zero points of the cpu layout)."""
        return self.target != "cpu"

    def require_buildable(self, where: str) -> None:
        """The one refusal of the cpu layout for TensorRT (engine builds from a flag or a graph)."""
        if not self.buildable:
            raise SmplerError(f"{where}: {NOT_BUILDABLE}; build engines from an int8 graph with TensorRT's layout "
                              "(smpler-export --precision int8 --target trt)")

    @classmethod
    def parse(cls, text: str, flag: str = "--precision") -> "Precision":
        """"fp32" | "fp16" | "int8" (= int8 TensorRT layout) | "int8-cpu" | "int8-trt"."""
        t = str(text).strip().lower().replace("_", "-")
        if t in ("fp32", "fp16"):
            return cls(t)
        if t in ("int8", "int8-trt"):
            return cls("int8", "trt")
        if t == "int8-cpu":
            return cls("int8", "cpu")
        raise SmplerError(f"{flag} {text}: expected one of {', '.join(NAMES)}")

    @classmethod
    def from_flags(cls, precision: str | None, target: str | None) -> "Precision":
        """smpler-export's --precision and --target: --target only with int8 (default trt)."""
        kind = precision or "fp32"
        if kind not in KINDS:
            raise SmplerError(f"--precision {kind}: expected one of {', '.join(KINDS)}")
        if target is not None and kind != "int8":
            raise SmplerError(f"--target {target}: applies to --precision int8 only (got --precision {kind})")
        if target is not None and target not in INT8_TARGETS:
            raise SmplerError(f"--target {target}: expected one of {', '.join(INT8_TARGETS)}")
        return cls(kind, (target or "trt") if kind == "int8" else None)

    @classmethod
    def from_metadata(cls, meta: dict, where: str = "graph") -> "Precision":
        """From an exported graph's metadata (`precision`, and `int8_target` for int8)."""
        kind = meta.get("precision")
        if kind not in KINDS:
            raise SmplerError(f"{where}: metadata precision {kind!r} is not one of {', '.join(KINDS)}")
        return cls(kind, meta.get("int8_target") or "trt") if kind == "int8" else cls(kind)
