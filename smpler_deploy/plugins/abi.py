"""SMPLer's attention sizes and the attention kernels' ABI: the one definition model, kernels, AOT and plugins use.

Torch- and Triton-free on purpose: the TensorRT side (plugins launching AOT cubins) imports this and nothing
heavier. Changing an argument list, order or type here means bumping KERNEL_ABI: it is stored in every
kernel index and in engines' plugin fields, so an engine never launches a binary with another ABI.
"""

from __future__ import annotations

import dataclasses
import math

# SMPLer's attention (official transformer_basics.py): hidden size, heads, local-window radius, feature scales.
CHANNELS = 128
HEADS = 4
HEAD_DIM = CHANNELS // HEADS
RADIUS = 4  # 2r x 2r window, (2r+1)^2 relative-position table
NUM_SCALES = 4

TRITON_VERSION_PIN = "3.9.0"  # the kernels (and their AOT binaries) are built and tested with this Triton
KERNEL_ABI = 1

KERNEL_NAMES = ("local_attention", "global_attention")
DTYPES = ("fp32", "fp16")

# Global kernel tiling: rows = Q*NH query vectors of one (batch, scale), keys streamed in BLOCK_N chunks.
GLOBAL_BLOCK_M = 32
GLOBAL_BLOCK_N = 64
NUM_WARPS = {"local_attention": 4, "global_attention": 4}
NUM_STAGES = {"local_attention": 1, "global_attention": 2}
# Local: no FMA contraction, so the fp32 window/bias math rounds exactly like the reference (memory-bound
# kernel, costs nothing). Global: contraction allowed (dot-heavy). Explicit, since Triton 3.10 flips the default.
FP_FUSION = {"local_attention": False, "global_attention": True}
# Triton appends two hidden pointer parameters (global and profile scratch); both sizes are asserted 0, so null.
HIDDEN_ARGS = ("global_scratch", "profile_scratch")
POINTER_ALIGN = 16  # the binaries assume 16-byte aligned buffers (tt.divisibility 16 on every pointer)


def variant_spec(kernel: str, dtype: str) -> dict:
    """Argument list (name, Triton type) in launch order, constexprs, divisibility hints and grid rule."""
    from ..errors import SmplerError

    st = {"fp32": "*fp32", "fp16": "*fp16"}[dtype]
    if kernel == "local_attention":
        args = [("feat_ptr", st), ("joints_ptr", "*fp32"), ("qk_ptr", st), ("table_ptr", "*fp32"),
                ("out_ptr", st), ("J", "i32"), ("S", "i32"), ("C", "i32")]
        constexprs = {"NH": HEADS, "R": RADIUS, "BLOCK_C": CHANNELS}
        grid = ["B*J", "1", "1"]
    elif kernel == "global_attention":
        args = [("qk_ptr", st), ("k0_ptr", st), ("k1_ptr", st), ("k2_ptr", st), ("k3_ptr", st), ("out_ptr", st),
                ("M", "i32"), ("C", "i32"), ("N0", "i32"), ("N1", "i32"), ("N2", "i32"), ("N3", "i32")]
        constexprs = {"BLOCK_M": GLOBAL_BLOCK_M, "BLOCK_N": GLOBAL_BLOCK_N, "BLOCK_C": CHANNELS,
                      "IEEE": dtype == "fp32"}
        grid = [f"cdiv(Q*NH,{GLOBAL_BLOCK_M})", "B", str(NUM_SCALES)]
    else:
        raise SmplerError(f"kernel {kernel!r}: expected one of {', '.join(KERNEL_NAMES)}")
    # 16-divisible: every pointer (TensorRT and torch allocations are >= 256-byte aligned) and C (128).
    div16 = [i for i, (name, ty) in enumerate(args) if ty.startswith("*") or name == "C"]
    return {"args": args, "constexprs": constexprs, "div16": div16, "grid": grid}


def global_grid(batch: int, rows: int, block_m: int = GLOBAL_BLOCK_M) -> tuple[int, int, int]:
    """Global kernel grid: (row blocks, batch, scales); scale slowest, so the long scale-0 programs go first."""
    return (math.ceil(rows / block_m), batch, NUM_SCALES)


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    args: tuple  # (type, value) per kernel parameter, in order; pointers are ints (device addresses)

    @property
    def empty(self) -> bool:
        return self.grid[0] * self.grid[1] * self.grid[2] == 0  # batch 0: nothing to launch


def pointer_count(entry: dict) -> int:
    """Buffers an index entry's kernel takes (its pointer parameters, less Triton's hidden scratch pointers)."""
    return sum(1 for a in entry["args"] if a["type"].startswith("*") and a["name"] not in HIDDEN_ARGS)


def plan_launch(entry: dict, shapes: list[tuple[int, ...]], pointers: list[int]) -> LaunchPlan:
    """Launch arguments for one AOT variant (an index entry): pure code, no CUDA (unit-testable anywhere).

    shapes/pointers: the plugin's inputs then output, in ONNX order —
    local: feat [B,S,S,C], joints [B,J,2], qk [B,J,NH,C], table [NH,T,T], out;
    global: qk [B,4,Q,NH,C], keys0..3 [B,N_s,C], out.
    """
    from ..errors import SmplerError

    kernel, ce = entry["kernel"], entry["constexprs"]

    def bad(msg):
        raise SmplerError(f"{kernel}: {msg} (kernels are compiled for C={ce.get('BLOCK_C')}"
                          + (f", NH={ce['NH']}, r={ce['R']})" if "NH" in ce else ")"))

    if kernel == "local_attention":
        feat, joints, qk, table = shapes[:4]
        b, s, s2, c = feat
        j, nh = qk[1], qk[2]
        if s != s2:
            bad(f"square feature map expected, got {s}x{s2}")
        if nh != ce["NH"] or tuple(table) != (nh, 2 * ce["R"] + 1, 2 * ce["R"] + 1):
            bad(f"heads/table {nh}/{tuple(table)} differ")
        if c > ce["BLOCK_C"] or c % 16 or tuple(joints) != (b, j, 2) or tuple(qk) != (b, j, nh, c):
            bad(f"shapes {[tuple(x) for x in shapes[:4]]} not supported")
        grid = (b * j, 1, 1)
        scalars = [j, s, c]
    elif kernel == "global_attention":
        qk, keys = shapes[0], shapes[1:5]
        b, ns, q, nh, c = qk
        if ns != NUM_SCALES or any(len(k) != 3 or k[0] != b or k[2] != c or k[1] < 1 for k in keys):
            bad(f"shapes {[tuple(x) for x in shapes[:5]]} not supported")
        if c > ce["BLOCK_C"] or c % 16:
            bad(f"C={c} not supported")
        grid = global_grid(b, q * nh, ce["BLOCK_M"])
        scalars = [q * nh, c] + [k[1] for k in keys]
    else:
        raise SmplerError(f"kernel {kernel!r}: unknown")
    if any(g > 65535 for g in grid[1:]) or grid[0] >= 2**31:
        bad(f"grid {grid} exceeds CUDA limits")
    specs = entry["args"]
    n_ptr = pointer_count(entry)
    if len(pointers) != n_ptr:
        raise SmplerError(f"{kernel}: {len(pointers)} buffers given, kernel takes {n_ptr}")
    values = list(pointers) + scalars + [0] * len(HIDDEN_ARGS)
    if len(values) != len(specs):
        raise SmplerError(f"{kernel}: index lists {len(specs)} parameters, plan has {len(values)}")
    args = tuple((a["type"], int(v)) for a, v in zip(specs, values))
    return LaunchPlan(grid=grid, block=(entry["threads_per_block"], 1, 1), shared=entry["shared"], args=args)
