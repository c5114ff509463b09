"""Where the AOT attention kernels live and how the runtime picks one: directory, index.json, cubin vs PTX.

Torch- and Triton-free (the TensorRT side imports it). `smpler-aot` writes a kernel directory; the plugins,
smpler-export, the TensorRT session, smpler-bench and smpler-demo are handed it explicitly (`resolve_kernel_dir`:
the directory given, else the per-user cache directory). $SMPLER_KERNEL_DIR is only the commands' default for
their kernel directory flag and smpler-aot's output (`cli/common.kernel_dir_arg`); nothing below reads the
environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..containment import contained
from ..errors import SmplerError, opt
from .abi import DTYPES, HIDDEN_ARGS, KERNEL_ABI, KERNEL_NAMES, TRITON_VERSION_PIN, variant_spec

INDEX_FORMAT = 2  # 2: per-kernel ptxas toolkit, PTX minimum driver, num_ctas
# 87 = Jetson Orin; 90/120 compile as the arch-specific sm_90a/sm_120a (Triton's choice): they run only there.
SUPPORTED_SMS = (75, 80, 86, 87, 89, 90, 120)
ENV = "SMPLER_KERNEL_DIR"

# PTX ISA -> first CUDA release whose driver JITs it (PTX ISA release notes), as cuDriverGetVersion spells it.
PTX_ISA_DRIVER = {"7.8": 11080, "8.0": 12000, "8.1": 12010, "8.2": 12020, "8.3": 12030, "8.4": 12040,
                  "8.5": 12050, "8.6": 12070, "8.7": 12080, "8.8": 12090, "9.0": 13000, "9.1": 13010}


def resolve_kernel_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The kernel directory: `explicit` (`kernel_dir`, smpler-aot's output), else the per-user cache directory.

    The one rule for both sides, so smpler-aot writes where the runtime looks unless told otherwise."""
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smpler_deploy" / f"kernels-triton{TRITON_VERSION_PIN}"


def aot_command(sm: int | None = None, outdir: str | os.PathLike | None = None) -> str:
    cmd = "smpler-aot" + (f" --sm {sm}" if sm is not None else "")
    return cmd + (f" -o {outdir}" if outdir is not None else "")


def cuda_version_int(text: str) -> int:
    """"13.4" -> 13040, the encoding of cuDriverGetVersion / CUDA_VERSION."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+).*", str(text))
    if not m:
        raise SmplerError(f"CUDA version {text!r}: expected MAJOR.MINOR")
    return int(m.group(1)) * 1000 + int(m.group(2)) * 10


def cuda_version_text(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def load_index(kernel_dir: str | os.PathLike) -> dict:
    path = Path(kernel_dir) / "index.json"
    fix = f"run `{aot_command(outdir=kernel_dir)}`"
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise SmplerError(f"{path}: no compiled attention kernels; {fix}") from None
    except (OSError, ValueError) as e:
        raise SmplerError(f"{path}: unreadable kernel index ({e}); re{fix}") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or "kernels" not in index:
        raise SmplerError(f"{path}: kernel index format {index.get('format') if isinstance(index, dict) else '?'}, "
                          f"this smpler-deploy reads format {INDEX_FORMAT}; re{fix}")
    if not isinstance(index["kernels"], list) or not all(isinstance(e, dict) for e in index["kernels"]):
        raise SmplerError(f"{path}: field kernels is not a list of objects; re{fix}")
    for i, e in enumerate(index["kernels"]):  # what every lookup reads (find_entry, check_kernels_for)
        for key, kind in (("kernel", str), ("dtype", str), ("sm", int)):
            if not isinstance(e.get(key), kind) or isinstance(e.get(key), bool):
                raise SmplerError(f"{path}: kernels[{i}].{key} is {json.dumps(e.get(key))[:40]}, expected "
                                  f"{'an integer' if kind is int else 'a string'}; re{fix}")
    return index


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SHA256 = re.compile(r"[0-9a-f]{64}")
# Fields of an index entry the plugins read when they load and launch it, and what each must be.
ENTRY_FIELDS = {
    "entry_name": (lambda v: isinstance(v, str) and bool(v), "a kernel name"),
    "cubin": (lambda v: isinstance(v, str), "a file name"),
    "cubin_sha256": (lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)), "a sha256 (64 hex digits)"),
    "threads_per_block": (lambda v: _is_int(v) and 0 < v <= 1024, "an integer in 1..1024"),
    "shared": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "num_ctas": (lambda v: v is None or _is_int(v), "an integer"),
    "ptx_version": (lambda v: v is None or isinstance(v, str), "a string"),
    "ptx_min_driver": (lambda v: v is None or _is_int(v), "an integer"),
    "ptxas_cuda": (lambda v: v is None or isinstance(v, str) and bool(re.fullmatch(r"\d+\.\d+.*", v)), "MAJOR.MINOR"),
}


def check_entry(entry: dict, kernel_dir: str | os.PathLike) -> dict[str, Path]:
    """Refuse an index entry the plugins could not load or would launch wrongly: a field of the wrong type, a
    missing checksum, an argument list or constants other than this ABI's, a binary named outside the kernel
    directory. Returns {"cubin": path, "ptx": path (when the entry has PTX)}; the files are not read here."""
    kdir = Path(kernel_dir)
    where = f"{kdir / 'index.json'}: {entry.get('kernel')} ({entry.get('dtype')}) sm_{entry.get('sm')}"
    fix = f"rerun `{aot_command(entry.get('sm') if _is_int(entry.get('sm')) else None, kdir)}`"
    if entry.get("kernel") not in KERNEL_NAMES or entry.get("dtype") not in DTYPES or entry.get("sm") not in SUPPORTED_SMS:
        raise SmplerError(f"{where}: not a kernel variant smpler-aot builds; {fix}")
    fields = dict(ENTRY_FIELDS)
    if entry.get("ptx") is not None:
        fields["ptx"] = (lambda v: isinstance(v, str), "a file name")
        fields["ptx_sha256"] = ENTRY_FIELDS["cubin_sha256"]
    for key, (ok, want) in fields.items():
        if key not in entry and key in ("num_ctas", "ptx_version", "ptx_min_driver", "ptxas_cuda"):
            continue  # optional: their absence has a defined meaning (load_order, one CTA)
        if key not in entry:
            raise SmplerError(f"{where}: no field {key}; {fix}")
        if not ok(entry[key]):
            raise SmplerError(f"{where}: field {key} is {json.dumps(entry[key])[:40]}, expected {want}; {fix}")
    spec = variant_spec(entry["kernel"], entry["dtype"])
    args = [{"name": n, "type": t} for n, t in spec["args"]] + [{"name": n, "type": "*i8"} for n in HIDDEN_ARGS]
    if entry.get("args") != args or entry.get("constexprs") != spec["constexprs"]:
        raise SmplerError(f"{where}: argument list or constants differ from this smpler-deploy's kernel ABI "
                          f"{KERNEL_ABI}; {fix}")
    return {kind: contained(kdir, entry[kind], what=f"{where}: {kind}")
            for kind in ("cubin", "ptx") if entry.get(kind) is not None}


def verify_kernel_dir(kernel_dir: str | os.PathLike) -> dict:
    """The whole kernel directory checked as smpler-check-gpu vouches for it: the index (format, ABI, Triton pin),
    every entry (`check_entry`), no variant listed twice, every binary present with the checksum the index gives.
    Returns the index."""
    import hashlib

    kdir = Path(kernel_dir)
    index = load_index(kdir)
    path = kdir / "index.json"
    if index.get("kernel_abi") != KERNEL_ABI or index.get("triton_version") != TRITON_VERSION_PIN:
        raise SmplerError(f"{path}: kernels have ABI {index.get('kernel_abi')!r} (Triton "
                          f"{index.get('triton_version')!r}), this smpler-deploy needs ABI {KERNEL_ABI} (Triton "
                          f"{TRITON_VERSION_PIN}); rerun `{aot_command(outdir=kdir)}`")
    if not index["kernels"]:
        raise SmplerError(f"{path}: lists no kernels; run `{aot_command(outdir=kdir)}`")
    seen = set()
    for e in index["kernels"]:
        files = check_entry(e, kdir)
        variant = (e["kernel"], e["dtype"], e["sm"])
        if variant in seen:
            raise SmplerError(f"{path}: {e['kernel']} ({e['dtype']}) sm_{e['sm']} is listed twice; "
                              f"rerun `{aot_command(e['sm'], kdir)}`")
        seen.add(variant)
        for kind, file in files.items():
            try:
                digest = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError as err:
                raise SmplerError(f"{kdir / e[kind]}: cannot read ({err.strerror}); "
                                  f"rerun `{aot_command(e['sm'], kdir)}`") from None
            if digest != e[f"{kind}_sha256"]:
                raise SmplerError(f"{kdir / e[kind]}: checksum differs from index.json; "
                                  f"rerun `{aot_command(e['sm'], kdir)}`")
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


def check_kernels_for(kernel_dir: str | os.PathLike, sm: int, kernels, what: str = "engine") -> dict:
    """Refuse early (session open, build start) when the kernel directory cannot serve this GPU.

    Checks the index exists, has this smpler-deploy's ABI, and lists every kernel in `kernels` for `sm`
    (at least one dtype; the dtype is resolved when TensorRT reports the tensor types). Returns the index."""
    kdir = Path(kernel_dir)
    if sm not in SUPPORTED_SMS:
        raise SmplerError(f"{what}: its attention plugins have no kernels for SM{sm} (smpler-aot targets "
                          f"{', '.join(map(str, SUPPORTED_SMS))}); export with {opt('no_plugins')} for this GPU")
    index = load_index(kdir)
    if index.get("kernel_abi") != KERNEL_ABI:
        raise SmplerError(f"{kdir}: kernels have ABI {index.get('kernel_abi')}, this smpler-deploy needs {KERNEL_ABI}; "
                          f"rerun `{aot_command(sm, kdir)}`")
    missing = [k for k in kernels if not any(e["kernel"] == k and e["sm"] == sm for e in index["kernels"])]
    if missing:
        raise SmplerError(f"{what}: no {', '.join(missing)} kernel for this GPU (SM{sm}) in {kdir}; "
                          f"build it with `{aot_command(sm, kdir)}` (or pass {opt('kernel_dir')} DIR)")
    return index


def load_order(entry: dict, driver_version: int) -> list[str]:
    """Which images of an index entry to try, in order ("cubin", "ptx"); pure code, tested on CPU.

    A cubin loads on drivers of its ptxas toolkit's major version or later (CUDA minor-version compatibility):
    sm_90/sm_120 cubins from Triton's CUDA 13 ptxas (ELF ABI 8) do not load on a CUDA 12 driver, so such a
    driver goes straight to the PTX, which it JITs when it knows the PTX ISA. The plugin also falls back to the
    PTX when a cubin it tried fails to load."""
    order = []
    ptxas = entry.get("ptxas_cuda")
    if ptxas is None or driver_version // 1000 >= cuda_version_int(ptxas) // 1000:
        order.append("cubin")
    need = entry.get("ptx_min_driver") or PTX_ISA_DRIVER.get(str(entry.get("ptx_version")), 0)
    if entry.get("ptx") and driver_version >= need:
        order.append("ptx")
    if not order:
        raise SmplerError(
            f"{entry['kernel']} ({entry['dtype']}) sm_{entry['sm']}: this driver supports CUDA "
            f"{cuda_version_text(driver_version)}; the cubin needs a CUDA {cuda_version_int(ptxas) // 1000}.x driver "
            f"and its PTX (ISA {entry.get('ptx_version')}) CUDA {cuda_version_text(need)} or later; update the driver"
        )
    return order
