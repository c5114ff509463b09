"""Every runtime decision that needs no GPU: shapes, buffer sizes and reuse, CUDA-graph capture, dtypes.

`runtime/tensorrt.py` only executes what these functions decide, so the decisions are tested here directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import SmplerError

# TensorRT DataType member name -> numpy dtype. bf16/fp8/fp4 have no numpy type: such an engine I/O is refused
# (our graphs keep I/O in fp32; precision lives inside the graph).
_NP_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def np_dtype(trt_dtype_name: str) -> np.dtype:
    name = trt_dtype_name.rsplit(".", 1)[-1].upper()  # accepts "DataType.FLOAT" and "FLOAT"
    if name not in _NP_DTYPES:
        raise SmplerError(f"engine I/O dtype {name} has no numpy equivalent; export with float32 I/O")
    return np.dtype(_NP_DTYPES[name])


@dataclass(frozen=True)
class TensorSpec:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # engine shape, -1 for dynamic dims


@dataclass(frozen=True)
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def describe(self) -> str:
        if all(a == b == c for a, b, c in zip(self.min[1:], self.opt[1:], self.max[1:])):
            return f"batch min {self.min[0]}, opt {self.opt[0]}, max {self.max[0]}"
        return f"min {list(self.min)}, opt {list(self.opt)}, max {list(self.max)}"


def plan_input_shape(shape: tuple[int, ...], spec: TensorSpec, profile: Profile, engine: str = "engine") -> tuple:
    """Validate a requested input shape against the engine's shape and profile; returns it as a tuple of ints."""
    shape = tuple(int(d) for d in shape)
    fixed_ok = len(shape) == len(spec.shape) and all(e in (-1, d) for e, d in zip(spec.shape, shape))
    if not fixed_ok:
        raise SmplerError(f"{engine}: input {spec.name} expects shape {list(spec.shape)} (-1 = any), got {list(shape)}")
    if any(d < lo or d > hi for d, lo, hi in zip(shape, profile.min, profile.max)):
        raise SmplerError(
            f"{engine}: input {spec.name} shape {list(shape)} is outside the engine's profile "
            f"({profile.describe()}); rebuild with --batch MIN:OPT:MAX covering it, or split the batch"
        )
    return shape


def nbytes(shape, dtype) -> int:
    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def buffers_to_grow(current: dict[str, int], needed: dict[str, int]) -> dict[str, int]:
    """Tensors whose allocation is missing or too small, with the size to allocate. Grow-only: a smaller batch
    reuses the existing buffers (their addresses stay put, so a captured CUDA graph can stay valid)."""
    return {name: n for name, n in needed.items() if current.get(name, -1) < n}


class Decision(NamedTuple):
    action: str  # "run" (plain enqueue) | "capture" (enqueue under capture, then launch) | "replay"
    release_graph: bool  # an existing graph is stale: destroy it first


class GraphPolicy:
    """When to capture / replay a CUDA graph of the TensorRT enqueue.

    A graph freezes input shapes and tensor addresses, so the key is (shapes, addresses). Capture only after
    `warmup` plain runs with the same key (TRT does lazy work on the first enqueue after a shape change; trtexec
    likewise enqueues once before capturing). A key change drops the graph and restarts the warm-up count.
    A capture failure disables graphs for the session (some engines contain non-capturable work).

    TensorRT-RTX is not captured by hand: it JIT-specialises kernels at run time (a capture after the warm-up
    could freeze fallback kernels) and stream capture needs engines built with REQUIRE_USER_ALLOCATION; its
    documented path is the runtime config's CUDA-graph strategy (WHOLE_GRAPH_CAPTURE), which captures inside
    `execute_async_v3` once the shape-specialised kernels exist. `runtime_graphs` says to ask for it; every
    decision is then a plain enqueue.
    """

    def __init__(self, enabled: bool = True, warmup: int = 2, flavour: str = "tensorrt"):
        if warmup < 1:
            raise ValueError("warmup must be >= 1: never capture the first enqueue after a shape change")
        self.runtime_graphs = enabled and flavour == "tensorrt-rtx"
        self.enabled, self.warmup = enabled and not self.runtime_graphs, warmup
        self.key = None
        self.runs = 0
        self.captured_key = None
        self.disabled_reason: str | None = None

    def decide(self, key) -> Decision:
        if not self.enabled or self.disabled_reason:
            return Decision("run", False)
        if self.captured_key is not None and key == self.captured_key:
            return Decision("replay", False)
        release = self.captured_key is not None
        if release:
            self.captured_key = None
        if key != self.key:
            self.key, self.runs = key, 0
        return Decision("capture" if self.runs >= self.warmup else "run", release)

    def ran(self, key) -> None:
        if key == self.key:
            self.runs += 1

    def captured(self, key) -> None:
        self.captured_key = key

    def failed(self, reason: str) -> None:
        self.disabled_reason = reason
        self.captured_key = None
