"""Every TensorRT runtime decision that needs no GPU: shapes, buffer sizes and reuse, the CUDA-graph policy.

`runtime/tensorrt.py` only executes what these functions decide, so the decisions are tested here directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import SmplerError, opt
from .graphs import GraphPolicy


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
            f"({profile.describe()}); rebuild with {opt('batch')} MIN:OPT:MAX covering it, or split the batch"
        )
    return shape


def nbytes(shape, dtype) -> int:
    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def buffers_to_grow(current: dict[str, int], needed: dict[str, int]) -> dict[str, int]:
    """Tensors whose allocation is missing or too small, with the size to allocate. Grow-only: a smaller batch
    reuses the existing buffers (their addresses stay put, so a captured CUDA graph can stay valid)."""
    return {name: n for name, n in needed.items() if current.get(name, -1) < n}


def trt_graph_policy(enabled: bool = True, warmup: int = 2, flavour: str = "tensorrt") -> GraphPolicy:
    """The graph policy of one TensorRT executor: one graph (one execution context), keyed by (shapes, addresses),
    captured after `warmup` plain enqueues with that key (TensorRT does lazy work on the first enqueue after a
    shape change; trtexec likewise enqueues once before capturing); a key change drops it.

    TensorRT-RTX is not captured by hand: it JIT-specialises kernels at run time (a capture after the warm-up
    could freeze fallback kernels) and stream capture needs engines built with REQUIRE_USER_ALLOCATION; its
    documented path is the runtime config's CUDA-graph strategy (WHOLE_GRAPH_CAPTURE), which captures inside
    `execute_async_v3` once the shape-specialised kernels exist. The policy's `runtime` says to ask for it; every
    decision is then a plain enqueue.
    """
    if warmup < 1:
        raise ValueError("warmup must be >= 1: never capture the first enqueue after a shape change")
    return GraphPolicy(enabled, warmup=warmup, max_graphs=1, replace=True, runtime=flavour == "tensorrt-rtx")
