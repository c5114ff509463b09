"""Ahead-of-time compilation of the attention kernels to cubin + PTX, without a GPU.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", sm, 32))` runs the whole pipeline on the CPU (the
cubin comes from Triton's bundled ptxas). Each variant is specialized for SMPLer's sizes (C=128, NH=4, r=4);
`plan_launch` checks a request against that specialization, so a plugin never launches a mismatched binary.

Output layout: `OUTDIR/{kernel}_{dtype}_sm{N}.cubin|.ptx` and `OUTDIR/index.json` describing every variant
(entry name, num_warps, shared memory, PTX ISA, grid rule, argument list). The plugins read only index.json and
the binaries, so the runtime needs neither Triton nor a compiler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable

from ..errors import SmplerError
from ..fileio import write_bytes_atomic, write_text_atomic

KERNEL_NAMES = ("local_attention", "global_attention")
DTYPES = ("fp32", "fp16")
# 87 = Jetson Orin; 90/120 compile as the arch-specific sm_90a/sm_120a (Triton's choice): they run only there.
SUPPORTED_SMS = (75, 80, 86, 87, 89, 90, 120)
INDEX_FORMAT = 1
# JetPack 6 ships CUDA 12.6, whose driver JITs PTX up to ISA 8.5; Triton 3.9 would emit 8.8 (its ptxas).
JETPACK6_PTX_ISA = 85
# Oldest ISA that knows each newer target (PTX ISA release notes): sm_100 -> 8.6, sm_120 -> 8.7.
MIN_PTX_ISA = {100: 86, 120: 87}

# Specialization baked into the binaries (SMPLer's attention sizes).
CHANNELS = 128
HEADS = 4
RADIUS = 4
NUM_WARPS = {"local_attention": 4, "global_attention": 4}
NUM_STAGES = {"local_attention": 1, "global_attention": 2}
# Local: no FMA contraction, so the fp32 window/bias math rounds exactly like the reference (memory-bound
# kernel, costs nothing). Global: contraction allowed (dot-heavy). Explicit, since Triton 3.10 flips the default.
FP_FUSION = {"local_attention": False, "global_attention": True}
# Triton appends two hidden pointer parameters (global and profile scratch); both sizes are asserted 0, so null.
HIDDEN_ARGS = ("global_scratch", "profile_scratch")


def default_kernel_dir() -> Path:
    """Where `smpler-aot` writes and the plugins look, unless told otherwise (SMPLER_KERNEL_DIR)."""
    env = os.environ.get("SMPLER_KERNEL_DIR")
    if env:
        return Path(env)
    from .kernels import TRITON_VERSION_PIN

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "smpler_deploy" / f"kernels-triton{TRITON_VERSION_PIN}"


def ptx_isa_for(sm: int) -> int:
    return max(JETPACK6_PTX_ISA, max((v for k, v in MIN_PTX_ISA.items() if sm >= k), default=0))


def variant_spec(kernel: str, dtype: str) -> dict:
    """Argument list (name, Triton type), constexprs and divisibility hints of one kernel variant."""
    st = {"fp32": "*fp32", "fp16": "*fp16"}[dtype]
    if kernel == "local_attention":
        args = [("feat_ptr", st), ("joints_ptr", "*fp32"), ("qk_ptr", st), ("table_ptr", "*fp32"),
                ("out_ptr", st), ("J", "i32"), ("S", "i32"), ("C", "i32")]
        constexprs = {"NH": HEADS, "R": RADIUS, "BLOCK_C": CHANNELS}
        grid = ["B*J", "1", "1"]
    elif kernel == "global_attention":
        from .kernels import GLOBAL_BLOCK_M, GLOBAL_BLOCK_N

        args = [("qk_ptr", st), ("k0_ptr", st), ("k1_ptr", st), ("k2_ptr", st), ("k3_ptr", st), ("out_ptr", st),
                ("M", "i32"), ("C", "i32"), ("N0", "i32"), ("N1", "i32"), ("N2", "i32"), ("N3", "i32")]
        constexprs = {"BLOCK_M": GLOBAL_BLOCK_M, "BLOCK_N": GLOBAL_BLOCK_N, "BLOCK_C": CHANNELS,
                      "IEEE": dtype == "fp32"}
        grid = [f"cdiv(Q*NH,{GLOBAL_BLOCK_M})", "B", "4"]
    else:
        raise SmplerError(f"kernel {kernel!r}: expected one of {', '.join(KERNEL_NAMES)}")
    # 16-divisible: every pointer (TensorRT and torch allocations are >= 256-byte aligned) and C (128).
    div16 = [i for i, (name, ty) in enumerate(args) if ty.startswith("*") or name == "C"]
    return {"args": args, "constexprs": constexprs, "div16": div16, "grid": grid}


@dataclasses.dataclass
class CompiledVariant:
    kernel: str
    dtype: str
    sm: int
    cubin: bytes
    ptx: str
    entry: dict


def compile_variant(kernel: str, dtype: str, sm: int) -> CompiledVariant:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels as K

    if K.triton_interprets():
        raise SmplerError("triton was imported with TRITON_INTERPRET=1; AOT compilation needs a compiler-mode "
                          "process (use aot.build, which spawns one, or run smpler-aot)")
    if triton.__version__ != K.TRITON_VERSION_PIN:
        raise SmplerError(f"triton {triton.__version__}: kernels are pinned to triton=={K.TRITON_VERSION_PIN}")
    spec = variant_spec(kernel, dtype)
    fn = K.as_jit_function(K.KERNELS[kernel])
    signature = dict(spec["args"]) | {k: "constexpr" for k in spec["constexprs"]}
    attrs = {(i,): [["tt.divisibility", 16]] for i in spec["div16"]}
    src = ASTSource(fn, signature, constexprs=spec["constexprs"], attrs=attrs)
    isa = ptx_isa_for(sm)
    options = {"num_warps": NUM_WARPS[kernel], "num_stages": NUM_STAGES[kernel], "ptx_version": isa,
               "enable_fp_fusion": FP_FUSION[kernel]}
    ck = triton.compile(src, target=GPUTarget("cuda", sm, 32), options=options)
    md = ck.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise SmplerError(f"{kernel} sm_{sm}: kernel needs scratch memory, which the plugins do not provide")
    ptx = ck.asm["ptx"]
    cubin = ck.asm["cubin"]
    m_ver = re.search(r"^\s*\.version\s+(\d+\.\d+)", ptx, re.M)
    m_tgt = re.search(r"^\s*\.target\s+(\S+)", ptx, re.M)
    stem = f"{kernel}_{dtype}_sm{sm}"
    entry = {
        "kernel": kernel,
        "dtype": dtype,
        "sm": sm,
        "entry_name": md.name,
        "cubin": stem + ".cubin",
        "ptx": stem + ".ptx",
        "cubin_sha256": hashlib.sha256(cubin).hexdigest(),
        "num_warps": md.num_warps,
        "threads_per_block": md.num_warps * 32,
        "num_stages": md.num_stages,
        "shared": md.shared,
        "ptx_version": m_ver.group(1) if m_ver else None,
        "ptx_target": m_tgt.group(1).rstrip(",") if m_tgt else None,
        "grid": spec["grid"],
        "args": [{"name": n, "type": t} for n, t in spec["args"]] + [{"name": n, "type": "*i8"} for n in HIDDEN_ARGS],
        "constexprs": spec["constexprs"],
        "divisible_by_16": [spec["args"][i][0] for i in spec["div16"]],
    }
    return CompiledVariant(kernel, dtype, sm, cubin, ptx, entry)


def parse_sms(values: Iterable[str | int] | None) -> list[int]:
    """`--sm 87 --sm 89` or `--sm 87,89` (also `sm_87`, `8.7`) -> sorted unique list; None -> all supported."""
    if not values:
        return list(SUPPORTED_SMS)
    out = set()
    for v in values:
        for tok in str(v).split(","):
            t = tok.strip().lower().removeprefix("sm_").removeprefix("sm")
            if "." in t:
                t = t.replace(".", "")
            if not t.isdigit() or int(t) not in SUPPORTED_SMS:
                raise SmplerError(f"--sm {tok.strip()}: expected one of {', '.join(map(str, SUPPORTED_SMS))}")
            out.add(int(t))
    return sorted(out)


def build(
    outdir: str | os.PathLike,
    sms: Iterable[int] | None = None,
    kernels: Iterable[str] = KERNEL_NAMES,
    dtypes: Iterable[str] = DTYPES,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Compile every (kernel, dtype, sm), write the binaries and index.json (each file atomically).

    In a process whose Triton runs the interpreter (CPU kernels, tests), the work moves to a child process.
    """
    from . import kernels as K

    if K.triton_interprets():
        return _build_in_child(outdir, sms, kernels, dtypes, progress)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise SmplerError(f"-o {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    sms = list(sms) if sms is not None else list(SUPPORTED_SMS)
    for sm in sms:
        if sm not in SUPPORTED_SMS:
            raise SmplerError(f"--sm {sm}: expected one of {', '.join(map(str, SUPPORTED_SMS))}")
    entries = []
    for kernel in kernels:
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise SmplerError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
            for sm in sms:
                v = compile_variant(kernel, dtype, sm)
                write_bytes_atomic(out / v.entry["cubin"], v.cubin)
                write_text_atomic(out / v.entry["ptx"], v.ptx)
                entries.append(v.entry)
                if progress:
                    progress(f"{v.entry['cubin']}: {len(v.cubin)} bytes, {v.entry['num_warps']} warps, "
                             f"{v.entry['shared']} B shared, PTX {v.entry['ptx_version']} {v.entry['ptx_target']}")
    index = {
        "format": INDEX_FORMAT,
        "triton_version": K.TRITON_VERSION_PIN,
        "kernel_abi": K.KERNEL_ABI,
        "kernels": entries,
    }
    # Merge with an existing index (e.g. `--sm 87` after `--sm 89`), newest variant wins.
    old = out / "index.json"
    if old.exists():
        try:
            prev = json.loads(old.read_text())
        except (OSError, ValueError):
            prev = None
        if prev and prev.get("kernel_abi") == K.KERNEL_ABI and prev.get("triton_version") == K.TRITON_VERSION_PIN:
            have = {(e["kernel"], e["dtype"], e["sm"]) for e in entries}
            keep = [e for e in prev.get("kernels", []) if (e["kernel"], e["dtype"], e["sm"]) not in have]
            keep = [e for e in keep if (out / e["cubin"]).exists()]
            index["kernels"] = keep + entries
    index["kernels"].sort(key=lambda e: (e["kernel"], e["dtype"], e["sm"]))
    write_text_atomic(old, json.dumps(index, indent=1) + "\n")
    return index


def _build_in_child(outdir, sms, kernels, dtypes, progress) -> dict:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "smpler_deploy.cli.aot", "-o", str(outdir)]
    argv += [a for sm in (sms if sms is not None else SUPPORTED_SMS) for a in ("--sm", str(sm))]
    argv += [a for k in kernels for a in ("--kernel", k)] + [a for d in dtypes for a in ("--dtype", d)]
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this same checkout
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if progress:
        for line in proc.stdout.splitlines():
            progress(line.strip())
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise SmplerError(f"AOT compile failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return load_index(outdir)


# ---------------------------------------------------------------------------------------------- runtime side

def aot_command(sm: int | None = None, outdir: str | os.PathLike | None = None) -> str:
    cmd = "smpler-aot" + (f" --sm {sm}" if sm is not None else "")
    return cmd + (f" -o {outdir}" if outdir is not None else "")


def load_index(kernel_dir: str | os.PathLike) -> dict:
    path = Path(kernel_dir) / "index.json"
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise SmplerError(f"{path}: no compiled attention kernels; run `{aot_command(outdir=kernel_dir)}`") from None
    except (OSError, ValueError) as e:
        raise SmplerError(f"{path}: unreadable kernel index ({e}); rerun `{aot_command(outdir=kernel_dir)}`") from None
    if index.get("format") != INDEX_FORMAT or "kernels" not in index:
        raise SmplerError(f"{path}: unknown index format; rerun `{aot_command(outdir=kernel_dir)}`")
    return index


def find_entry(index: dict, kernel: str, dtype: str, sm: int, kernel_dir: str | os.PathLike = "DIR") -> dict:
    for e in index["kernels"]:
        if e["kernel"] == kernel and e["dtype"] == dtype and e["sm"] == sm:
            return e
    have = sorted({e["sm"] for e in index["kernels"] if e["kernel"] == kernel and e["dtype"] == dtype})
    raise SmplerError(
        f"{kernel} ({dtype}): no cubin for sm_{sm} in {kernel_dir} (have: {', '.join(f'sm_{s}' for s in have) or 'none'}); "
        f"run `{aot_command(sm, kernel_dir)}`"
    )


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    args: tuple  # (type, value) per kernel parameter, in order; pointers are ints (device addresses)


def plan_launch(entry: dict, shapes: list[tuple[int, ...]], pointers: list[int]) -> LaunchPlan:
    """Launch arguments for one AOT variant: pure code, no CUDA (unit-testable on any machine).

    shapes/pointers: the plugin's inputs then output, in ONNX order —
    local: feat [B,S,S,C], joints [B,J,2], qk [B,J,NH,C], table [NH,T,T], out;
    global: qk [B,4,Q,NH,C], keys0..3 [B,N_s,C], out.
    """
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
        if ns != 4 or any(len(k) != 3 or k[0] != b or k[2] != c or k[1] < 1 for k in keys):
            bad(f"shapes {[tuple(x) for x in shapes[:5]]} not supported")
        if c > ce["BLOCK_C"] or c % 16:
            bad(f"C={c} not supported")
        m = q * nh
        grid = (math.ceil(m / ce["BLOCK_M"]), b, 4)
        scalars = [m, c] + [k[1] for k in keys]
    else:
        raise SmplerError(f"kernel {kernel!r}: unknown")
    if any(g > 65535 for g in grid[1:]) or grid[0] >= 2**31:
        bad(f"grid {grid} exceeds CUDA limits")
    specs = entry["args"]
    n_ptr = sum(1 for a in specs if a["type"].startswith("*") and a["name"] not in HIDDEN_ARGS)
    if len(pointers) != n_ptr:
        raise SmplerError(f"{kernel}: {len(pointers)} buffers given, kernel takes {n_ptr}")
    values = list(pointers) + scalars + [0] * len(HIDDEN_ARGS)
    if len(values) != len(specs):
        raise SmplerError(f"{kernel}: index lists {len(specs)} parameters, plan has {len(values)}")
    args = tuple((a["type"], int(v)) for a, v in zip(specs, values))
    return LaunchPlan(grid=grid, block=(entry["threads_per_block"], 1, 1), shared=entry["shared"], args=args)
