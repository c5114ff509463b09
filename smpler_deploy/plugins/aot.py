"""Ahead-of-time compilation of the attention kernels to cubin + PTX, without a GPU.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", sm, 32))` runs the whole pipeline on the CPU (the
cubin comes from Triton's bundled ptxas). Each variant is specialized for SMPLer's sizes (C=128, NH=4, r=4);
`abi.plan_launch` checks a request against that specialization, so a plugin never launches a mismatched binary.

Output layout: `OUTDIR/{kernel}_{dtype}_sm{N}.cubin|.ptx` and `OUTDIR/index.json` describing every variant
(entry name, num_warps, num_ctas, shared memory, PTX ISA and the driver it needs, the CUDA toolkit of the ptxas
that assembled the cubin, grid rule, argument list). The plugins read only index.json and the binaries
(`kernel_store`), so the runtime needs neither Triton nor a compiler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable

from ..engine.targets import parse_sms as parse_targets
from ..errors import SmplerError, opt
from ..fileio import check_output_dir, outputs, write_bytes_atomic, write_text_atomic
from .abi import (  # noqa: F401  (CHANNELS/HEADS/RADIUS: the specialization, read by tests and builders)
    CHANNELS, DTYPES, FP_FUSION, HEADS, HIDDEN_ARGS, KERNEL_ABI, KERNEL_NAMES, NUM_STAGES, NUM_WARPS, RADIUS,
    TRITON_VERSION_PIN, variant_spec,
)
from .kernel_store import INDEX_FORMAT, PTX_ISA_DRIVER, SUPPORTED_SMS, load_index

# PTX ISA 8.0 (CUDA 12.0, driver R525+): every target up to sm_90a assembles at it (measured with Triton 3.9's
# ptxas for sm_75..90; ISA 6.3 is refused on sm_75: ldmatrix needs 6.5). Triton would emit 8.8, which only 12.9+
# drivers JIT; at 8.0 the PTX of sm_90 (whose cubin needs a CUDA 13 driver) also runs on the R535/R550 drivers of
# many H100/H200 fleets and on JetPack 6 (CUDA 12.6), and the CUDA 12.9 cubins of sm_75..89 load on any 12.x driver.
PTX_ISA_FLOOR = 80
# Oldest ISA that knows each newer target (PTX ISA release notes): sm_100 -> 8.6, sm_120 -> 8.7.
MIN_PTX_ISA = {100: 86, 120: 87}
# Shared memory per block with the opt-in (CUDA programming guide, compute capabilities table): a variant over its
# target's limit would only fail at launch, so smpler-aot refuses it.
SHARED_OPTIN_BYTES = {75: 64 * 1024, 80: 163 * 1024, 86: 99 * 1024, 87: 163 * 1024, 89: 99 * 1024,
                      90: 227 * 1024, 120: 99 * 1024}
# PTX parameter widths (bytes) of the index's argument types: pointers are 64-bit (.u64), i32/fp32 32-bit.
_PARAM_BYTES = {"i32": 4, "fp32": 4, "i64": 8}
_PTX_PARAM = re.compile(r"\.param\s+\.([busf])(\d+)\b[^,)]*?\s+(\w+_param_\d+)")


def triton_version() -> str:
    import triton

    return triton.__version__


def ptxas_cuda_version(sm: int) -> str:
    """CUDA release of the ptxas Triton assembles sm's cubin with ("12.9" below sm_90, "13.4" from sm_90 on in
    Triton 3.9), from Triton's own tool lookup (its bundled binaries, or TRITON_PTXAS[_BLACKWELL]_PATH)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(sm).version


def ptx_isa_for(sm: int) -> int:
    return max(PTX_ISA_FLOOR, max((v for k, v in MIN_PTX_ISA.items() if sm >= k), default=0))


def check_variant(entry: dict, ptx: str) -> None:
    """Refuse a compiled variant the target cannot run or the plugins would launch wrongly: shared memory over the
    target's opt-in limit, or a PTX `.entry` whose parameters (count, widths) differ from the index's `args`."""
    what = f"{entry['kernel']} ({entry['dtype']}) sm_{entry['sm']}"
    limit = SHARED_OPTIN_BYTES.get(entry["sm"])
    if limit is None or entry["shared"] > limit:
        raise SmplerError(f"{what}: needs {entry['shared']} B of shared memory per block; sm_{entry['sm']} allows "
                          f"{limit} B with the opt-in; change the variant's tiling (plugins/abi.py)")
    m = re.search(rf"\.entry\s+{re.escape(entry['entry_name'])}\s*\((.*?)\)", ptx, re.S)
    if not m:
        raise SmplerError(f"{what}: the PTX has no .entry {entry['entry_name']}")
    got = [int(bits) // 8 for _, bits, _ in _PTX_PARAM.findall(m.group(1))]
    want = [8 if a["type"].startswith("*") else _PARAM_BYTES[a["type"]] for a in entry["args"]]
    if got != want:
        raise SmplerError(f"{what}: PTX .entry {entry['entry_name']} takes {len(got)} parameters of {got} bytes, the "
                          f"index lists {len(want)} of {want} ({[a['name'] for a in entry['args']]}); the plugins "
                          "would pass the wrong arguments")


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
    if triton.__version__ != TRITON_VERSION_PIN:
        raise SmplerError(f"triton {triton.__version__}: kernels are pinned to triton=={TRITON_VERSION_PIN}")
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
    ptx_version = m_ver.group(1) if m_ver else None
    stem = f"{kernel}_{dtype}_sm{sm}"
    entry = {
        "kernel": kernel,
        "dtype": dtype,
        "sm": sm,
        "entry_name": md.name,
        "cubin": stem + ".cubin",
        "ptx": stem + ".ptx",
        "cubin_sha256": hashlib.sha256(cubin).hexdigest(),
        "ptx_sha256": hashlib.sha256(ptx.encode()).hexdigest(),
        "num_warps": md.num_warps,
        "threads_per_block": md.num_warps * 32,
        "num_stages": md.num_stages,
        "shared": md.shared,
        "num_ctas": getattr(md, "num_ctas", 1),
        "ptx_version": ptx_version,
        "ptx_target": m_tgt.group(1).rstrip(",") if m_tgt else None,
        "ptx_min_driver": PTX_ISA_DRIVER.get(ptx_version),
        # The cubin loads only on a driver of this CUDA major or later (sm_90/120: Triton's CUDA 13 ptxas).
        "ptxas_cuda": ptxas_cuda_version(sm),
        "grid": spec["grid"],
        "args": [{"name": n, "type": t} for n, t in spec["args"]] + [{"name": n, "type": "*i8"} for n in HIDDEN_ARGS],
        "constexprs": spec["constexprs"],
        "divisible_by_16": [spec["args"][i][0] for i in spec["div16"]],
    }
    check_variant(entry, ptx)
    return CompiledVariant(kernel, dtype, sm, cubin, ptx, entry)


def parse_sms(values: Iterable[str | int] | None) -> list[int]:
    """`sms` as [87, 89] or ["87,89"] (also `sm_87`, `8.7`) -> sorted unique list; None -> all supported.
    The engine builds' parser (`engine.targets.parse_sms`), checked against the targets smpler-aot compiles."""
    if not values:
        return list(SUPPORTED_SMS)
    return sorted(parse_targets(values, list(SUPPORTED_SMS), what="a smpler-aot target"))


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
    if triton_version() != TRITON_VERSION_PIN:  # before any work or file
        raise SmplerError(f"triton {triton_version()}: kernels are pinned to triton=={TRITON_VERSION_PIN}")
    out = check_output_dir(outdir, opt("out"))  # before compiling: a file, missing parent or read-only dir fails here
    sms = parse_sms(sms)  # ints or spellings; None: every supported target
    compiled = []  # every variant compiled before any file is written (a failure or Ctrl-C leaves no file)
    for kernel in kernels:
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise SmplerError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
            for sm in sms:
                v = compile_variant(kernel, dtype, sm)
                compiled.append(v)
                if progress:
                    progress(f"{v.entry['cubin']}: {len(v.cubin)} bytes, {v.entry['num_warps']} warps, "
                             f"{v.entry['shared']} B shared, PTX {v.entry['ptx_version']} {v.entry['ptx_target']}")
    entries = [v.entry for v in compiled]
    index = {
        "format": INDEX_FORMAT,
        "triton_version": TRITON_VERSION_PIN,
        "kernel_abi": KERNEL_ABI,
        "kernels": entries,
    }
    # Merge with an existing index (e.g. SM87 built after SM89), newest variant wins.
    old = out / "index.json"
    if old.exists():
        try:
            prev = json.loads(old.read_text())
        except (OSError, ValueError):
            prev = None
        same = (prev.get("format"), prev.get("kernel_abi"), prev.get("triton_version")) if isinstance(prev, dict) else ()
        if same == (INDEX_FORMAT, KERNEL_ABI, TRITON_VERSION_PIN):
            have = {(e["kernel"], e["dtype"], e["sm"]) for e in entries}
            keep = [e for e in prev.get("kernels", []) if (e["kernel"], e["dtype"], e["sm"]) not in have]
            keep = [e for e in keep if (out / e["cubin"]).exists()]
            index["kernels"] = keep + entries
    index["kernels"].sort(key=lambda e: (e["kernel"], e["dtype"], e["sm"]))
    # One transaction: the binaries and the merged index together, or (full disk, Ctrl-C) none of them and the
    # previous files put back.
    files = [out / n for v in compiled for n in (v.entry["cubin"], v.entry["ptx"])]
    with outputs(*files, old, force=True, dirs=[(out, opt("out"))]):
        for v in compiled:
            write_bytes_atomic(out / v.entry["cubin"], v.cubin)
            write_text_atomic(out / v.entry["ptx"], v.ptx)
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
