"""Load and launch the AOT attention kernels through the CUDA driver API (cuda-python); no torch, no Triton.

`resolve_function` (index -> module -> CUfunction) runs once per CUDA context and kernel variant — the
plugins call it from `on_shape_change`, not per enqueue — and picks cubin or PTX for this driver
(`kernel_store.load_order`, with a PTX fallback when a cubin fails to load). The launch is `PreparedLaunch`
(a resolved `KernelFunction` and fixed shapes, called with device pointers and a stream), callable with any object
that has the driver's functions: the TensorRT plugins' enqueue uses it, and so does smpler-check-gpu's AOT step
without TensorRT.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import threading
from pathlib import Path

from ..errors import SmplerError
from ..plugins.abi import HIDDEN_ARGS, KERNEL_ABI, POINTER_ALIGN, LaunchPlan, plan_launch, pointer_count
from ..plugins.kernel_store import (PTX_ISA_DRIVER, aot_command, check_entry, cuda_version_text, find_entry,
                                    load_index, load_order)


def cuda_driver():
    """`cuda.bindings.driver` (cuda-python >= 12.6), or `cuda.cuda` of older releases."""
    try:
        from cuda.bindings import driver  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as driver  # older cuda-python
        except ImportError:
            raise SmplerError("TensorRT plugins need cuda-python at runtime: pip install 'smpler-deploy[trt]' "
                              "(CUDA 12 driver) or 'smpler-deploy[trt-cu13]' (CUDA 13, driver R580+)") from None
    return driver


def check(cu, res, what):
    """Unpack cuda-python's `(CUresult, *values)`; raise naming the call on error."""
    err, *rest = res if isinstance(res, tuple) else (res,)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise SmplerError(f"{what} failed: {getattr(err, 'name', err)}")
    return rest[0] if len(rest) == 1 else rest


@dataclasses.dataclass(frozen=True)
class KernelFunction:
    function: object  # CUfunction
    entry: dict  # the index entry (argument list, block, shared memory)
    image: str  # "cubin" or "ptx": what the driver loaded
    sm: int
    context: int


_lock = threading.Lock()
_functions: dict = {}  # (context, kernel dir, kernel, dtype, abi) -> KernelFunction
_modules: list = []  # loaded modules stay loaded for the life of the process
_sm: dict = {}  # context -> (compute capability, opt-in shared memory per block)
_driver_version: list = []


def current_context(cu, device: int = 0) -> int:
    """The calling thread's CUDA context. When none is current (a thread where only the driver API ran, or torch
    before its first allocation), retain `device`'s primary context and make it current, as Triton's launcher
    does before loading a binary; inside a TensorRT enqueue TensorRT's context is already current."""
    ctx = int(check(cu, cu.cuCtxGetCurrent(), "cuCtxGetCurrent"))
    if not ctx:
        check(cu, cu.cuInit(0), "cuInit")
        dev = check(cu, cu.cuDeviceGet(device), f"cuDeviceGet({device})")
        primary = check(cu, cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        check(cu, cu.cuCtxSetCurrent(primary), "cuCtxSetCurrent")
        ctx = int(primary)
    return ctx


def _device_facts(cu, ctx: int) -> tuple[int, int]:
    """(compute capability as an int, 8.9 -> 89; opt-in shared memory per block in bytes) of the current
    context's device, queried once per context."""
    if ctx not in _sm:
        dev = check(cu, cu.cuCtxGetDevice(), "cuCtxGetDevice")
        a = cu.CUdevice_attribute
        get = lambda attr: int(check(cu, cu.cuDeviceGetAttribute(attr, dev), "cuDeviceGetAttribute"))
        sm = get(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10 + get(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        _sm[ctx] = (sm, get(a.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN))
    return _sm[ctx]


def context_sm(cu, ctx: int) -> int:
    """Compute capability of the current context's device as an int (8.9 -> 89)."""
    return _device_facts(cu, ctx)[0]


def driver_version(cu) -> int:
    """cuDriverGetVersion: the CUDA version the installed driver supports, e.g. 12060 for 12.6."""
    if not _driver_version:
        _driver_version.append(int(check(cu, cu.cuDriverGetVersion(), "cuDriverGetVersion")))
    return _driver_version[0]


def _image(kdir: Path, entry: dict, kind: str, sm: int, path: Path) -> bytes:
    """The binary at `path` (resolved inside `kdir` by check_entry), refused unless its sha256 is the index's."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SmplerError(f"{kdir / entry[kind]}: cannot read ({e.__class__.__name__}); "
                          f"rerun `{aot_command(sm, kdir)}`") from None
    if hashlib.sha256(data).hexdigest() != entry[f"{kind}_sha256"]:  # check_entry: the field is always there
        raise SmplerError(f"{kdir / entry[kind]}: checksum differs from index.json; rerun `{aot_command(sm, kdir)}`")
    return data + b"\0" if kind == "ptx" else data  # the driver reads PTX as a NUL-terminated string


def resolve_function(cu, kernel: str, dtype: str, kernel_dir, abi: int = KERNEL_ABI) -> KernelFunction:
    """The CUfunction of (kernel, dtype) for the current context's GPU, loaded once per context."""
    ctx = current_context(cu)
    kdir = Path(kernel_dir)
    key = (ctx, str(kdir), kernel, dtype, abi)
    with _lock:
        if key in _functions:
            return _functions[key]
        sm, optin = _device_facts(cu, ctx)
        index = load_index(kdir)
        if index.get("kernel_abi") != abi:
            raise SmplerError(f"{kdir}: kernels have ABI {index.get('kernel_abi')}, the engine expects {abi}; "
                              f"rerun `{aot_command(sm, kdir)}` with this smpler-deploy version")
        entry = find_entry(index, kernel, dtype, sm, kdir)
        files = check_entry(entry, kdir)  # fields, checksums present, binaries inside kdir
        if entry.get("num_ctas", 1) != 1:  # clusters would need cuLaunchKernelEx with a cluster attribute
            raise SmplerError(f"{kdir / entry['cubin']}: compiled with num_ctas={entry['num_ctas']}; the plugins "
                              f"launch one CTA per program; rerun `{aot_command(sm, kdir)}`")
        if entry["shared"] > optin:  # smpler-aot refuses such variants; an index from elsewhere may hold one
            raise SmplerError(f"{kernel} ({dtype}) sm_{sm}: needs {entry['shared']} B of shared memory per block, this "
                              f"GPU allows {optin} B (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN); rerun "
                              f"`{aot_command(sm, kdir)}`")
        failures = []
        for kind in load_order(entry, driver_version(cu)):
            err, module = cu.cuModuleLoadData(_image(kdir, entry, kind, sm, files[kind]))
            if err == cu.CUresult.CUDA_SUCCESS:
                break
            failures.append(f"{kind}: {getattr(err, 'name', err)}")
        else:
            need = entry.get("ptx_min_driver") or PTX_ISA_DRIVER.get(str(entry.get("ptx_version")), 0)
            raise SmplerError(f"{kernel} ({dtype}) sm_{sm}: the driver (CUDA {cuda_version_text(driver_version(cu))}) "
                              f"loaded neither image ({'; '.join(failures)}); the PTX needs a CUDA "
                              f"{cuda_version_text(need)}+ driver (PTX ISA {entry.get('ptx_version')}), the cubin a "
                              f"CUDA {entry.get('ptxas_cuda', '?')} one (docs/gpu-install.md); rerun "
                              f"`{aot_command(sm, kdir)}` or update the driver")
        _modules.append(module)
        fn = check(cu, cu.cuModuleGetFunction(module, entry["entry_name"].encode()), "cuModuleGetFunction")
        if entry["shared"] > 48 * 1024:  # dynamic shared memory above 48 KiB needs an explicit opt-in
            attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            check(cu, cu.cuFuncSetAttribute(fn, attr, entry["shared"]), "cuFuncSetAttribute")
        _functions[key] = KernelFunction(fn, entry, kind, sm, ctx)
        return _functions[key]


_CTYPES = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "fp32": ctypes.c_float}


def pack_args(plan: LaunchPlan):
    """ctypes storage for each parameter plus the void*[] array cuLaunchKernel reads (keep both alive)."""
    vals = [ctypes.c_uint64(v) if t.startswith("*") else _CTYPES[t](v) for t, v in plan.args]
    ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.addressof(v) for v in vals])
    return vals, ptrs


def check_alignment(plan: LaunchPlan, entry: dict, what: str) -> None:
    """Every buffer must be 16-byte aligned: the binaries were compiled assuming it (tt.divisibility)."""
    names = [a["name"] for a in entry["args"]]
    for name, (ty, ptr) in zip(names, plan.args):
        if ty.startswith("*") and name not in HIDDEN_ARGS and ptr % POINTER_ALIGN:
            raise SmplerError(f"{what}: buffer {name} at {ptr:#x} is not {POINTER_ALIGN}-byte aligned")


class PreparedLaunch:
    """A resolved function and fixed shapes (one plugin, one shape configuration): per enqueue only the
    pointers change; the packed argument array is reused while they stay (the common case, and graph replays)."""

    def __init__(self, cu, fn: KernelFunction, shapes, what: str = ""):
        self.cu, self.fn, self.shapes, self.what = cu, fn, tuple(tuple(s) for s in shapes), what
        n_ptr = pointer_count(fn.entry)
        self.template = plan_launch(fn.entry, list(self.shapes), [0] * n_ptr)  # shapes checked once, here
        self.n_ptr = n_ptr
        self._packed = None  # (pointers, vals, ptrs)

    def __call__(self, pointers, stream) -> bool:  # stream: an int handle or a cuda-python stream object
        if self.template.empty:
            return False
        pointers = tuple(int(p) for p in pointers)
        if self._packed is None or self._packed[0] != pointers:
            if len(pointers) != self.n_ptr:
                raise SmplerError(f"{self.what}: {len(pointers)} buffers given, kernel takes {self.n_ptr}")
            plan = dataclasses.replace(self.template, args=tuple(
                (t, pointers[i] if i < self.n_ptr else v) for i, (t, v) in enumerate(self.template.args)))
            check_alignment(plan, self.fn.entry, self.what)
            self._packed = (pointers, *pack_args(plan))
        t = self.template
        cu = self.cu
        check(cu, cu.cuLaunchKernel(self.fn.function, *t.grid, *t.block, t.shared, cu.CUstream(int(stream)),
                                    ctypes.addressof(self._packed[2]), 0), f"{self.what}: cuLaunchKernel")
        return True
