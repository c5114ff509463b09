"""Self-check steps for the attention kernels alone, against the PyTorch attention path: the Triton kernels JIT-
compiled for this GPU (or under Triton's interpreter), and the shipped AOT binaries launched by the plugins' code."""

from __future__ import annotations

import numpy as np

from ..errors import SmplerError
from .core import CheckContext, StepResult, judged, skipped, within
from .reference import KERNEL_ATOL, cuda_ms, median, no_cuda

# --- 2. Triton kernels, JIT --------------------------------------------------------------------------------------

def kernel_inputs(small: bool, dtype, device, seed: int = 0):
    """Local and global attention inputs: SMPLer's sizes (scale-0 map 56x56, 24 joints, 26 queries, C=128, 4 heads),
    or small ones for the interpreter."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, s, j, q, ns = (1, 12, 5, 3, (100, 30, 7, 1)) if small else (2, 56, 24, 26, (3136, 784, 196, 49))
    c, nh, r = 128, 4, 4
    feat = torch.randn(b, s, s, c, generator=g)
    joints = (torch.rand(b, j, 2, generator=g) * 2 - 1) * 1.2
    qk_l = torch.randn(b, j, nh, c, generator=g) / c**0.5 * 3
    table = torch.randn(nh, 2 * r + 1, 2 * r + 1, generator=g)
    keys = [torch.randn(b, n, c, generator=g) for n in ns]
    qk_g = torch.randn(b, 4, q, nh, c, generator=g) / c**0.5 * 3
    local = (feat.to(dtype), joints, qk_l.to(dtype), table)
    glob = ([k.to(dtype) for k in keys], qk_g.to(dtype))
    ref_local = _torch_local(feat.to(dtype).float(), joints, qk_l.to(dtype).float(), table)
    ref_global = _torch_global([k.to(dtype).float() for k in keys], qk_g.to(dtype).float())
    to = lambda t: t.to(device)  # noqa: E731
    return (tuple(map(to, local)), ([to(k) for k in glob[0]], to(glob[1])), ref_local, ref_global)


def _torch_local(*a):
    from ..model.attention import local_attention

    return local_attention(*a)


def _torch_global(keys, qk):
    from ..model.attention import global_attention_multiscale

    return global_attention_multiscale(keys, qk)


def step_triton(ctx: CheckContext) -> StepResult:
    """The Triton kernels, JIT-compiled for this GPU (any Triton version), vs the PyTorch attention path; under
    `interpret` on CPU tensors through Triton's interpreter (the check's own CPU test)."""
    name = "triton-jit-vs-torch"
    if not (ctx.torch_cuda or ctx.interpret):
        return skipped(name, no_cuda(ctx) + " (--interpret runs the kernels through Triton's interpreter on CPU)")
    try:
        import triton
    except ImportError:
        return skipped(name, "triton not installed (pip install 'smpler-deploy[kernels]')")
    import torch

    from ..plugins import kernels as K

    if K.triton_interprets() != ctx.interpret:
        return skipped(name, "Triton was imported in the other mode in this process (interpreter vs compiler is "
                             "fixed at import); rerun smpler-check-gpu in a fresh process")
    device = torch.device("cpu" if ctx.interpret else "cuda")
    nums = {"triton": triton.__version__, "mode": "interpreter on CPU (timings not meaningful)" if ctx.interpret
            else "compiled for this GPU"}
    fails = []
    for dtype, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
        local, glob, ref_l, ref_g = kernel_inputs(ctx.interpret, dt, device)
        out_l = K.local_attention(*local)
        out_g = K.global_attention_multiscale(*glob)
        for kind, out, ref in (("local", out_l, ref_l), ("global", out_g, ref_g)):
            err = float((out.float().cpu() - ref).abs().max())
            nums[f"{kind} {dtype} max_abs"] = err
            within(fails, f"{kind} {dtype} max abs error", err, KERNEL_ATOL[dtype])
            if ctx.torch_cuda and not ctx.interpret:
                torch_fn = (lambda: _torch_local(*local)) if kind == "local" else (lambda: _torch_global(*glob))
                triton_fn = (lambda: K.local_attention(*local)) if kind == "local" else (
                    lambda: K.global_attention_multiscale(*glob))
                nums[f"{kind} {dtype} triton_ms"] = cuda_ms(triton_fn, ctx.iters)
                nums[f"{kind} {dtype} torch_ms"] = cuda_ms(torch_fn, ctx.iters)
    return judged(name, nums, fails)


# --- 3. shipped AOT binaries through the plugins' launch code -----------------------------------------------------

class TensorDesc:
    """Minimal stand-in for TensorRT's PluginTensorDesc where TensorRT is absent: what enqueue reads (dims, and
    the type's name, which the plugins' `check_types` takes)."""

    def __init__(self, dims, type_name: str):
        self.dims, self.type_name = tuple(dims), type_name


class DeviceBuffers:
    """Device memory for the AOT launch: torch's allocator when torch has CUDA, else cuda-python's runtime API
    (`trt.cuda_mem`). Arrays go up with `put`, come back with `get`; `stream` is what the kernels launch on."""

    def __init__(self, use_torch: bool):
        self.use_torch, self.keep = use_torch, {}
        if use_torch:
            import torch

            self.torch = torch
            self.stream = int(torch.cuda.current_stream().cuda_stream)
        else:
            from ..trt import cuda_mem

            self.cm = cuda_mem
            self.stream = cuda_mem.stream_create()

    def put(self, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        if self.use_torch:
            t = self.torch.from_numpy(arr).cuda()
            self.keep[t.data_ptr()] = t
            return t.data_ptr()
        ptr = self.cm.malloc(max(arr.nbytes, 16))
        self.keep[ptr] = arr
        self.cm.memcpy_htod(ptr, arr.ctypes.data, arr.nbytes, self.stream)
        self.cm.synchronize(self.stream)
        return ptr

    def get(self, ptr: int, like: np.ndarray) -> np.ndarray:
        if self.use_torch:
            self.torch.cuda.synchronize()
            return self.keep[ptr].cpu().numpy()
        out = np.empty_like(like)
        self.cm.memcpy_dtoh(out.ctypes.data, ptr, out.nbytes, self.stream)
        self.cm.synchronize(self.stream)
        return out

    def time_ms(self, fn, iters: int) -> float | None:
        if self.use_torch:
            return cuda_ms(fn, iters)
        from ..runtime.timing import EventTimer

        timer = EventTimer(self.cm, self.stream)  # cuda_mem's events on this stream
        try:
            return median(timer.time_ms(fn, iters))
        finally:
            timer.close()

    def close(self):
        if not self.use_torch:
            for ptr in self.keep:
                self.cm.free(ptr)
            self.cm.stream_destroy(self.stream)
        self.keep.clear()


def aot_cases(dtype: str) -> list[dict]:
    """The plugin launches the AOT step makes, as enqueue would see them: host arrays in the plugin's input order,
    descriptor stand-ins, the storage type `check_types` derives from them, and the torch reference (CPU, fp32)."""
    import torch

    from ..trt.plugins import SPECS, check_types

    local, glob, ref_l, ref_g = kernel_inputs(False, {"fp32": torch.float32, "fp16": torch.float16}[dtype], "cpu")
    out = []
    for kind, tensors, ref in (("local", list(local), ref_l), ("global", [glob[1], *glob[0]], ref_g)):
        op = next(o for o in SPECS if SPECS[o]["kernel"] == f"{kind}_attention")
        arrays = [t.numpy() for t in tensors]
        descs = [TensorDesc(a.shape, dtype if r == "F" else "fp32") for a, r in zip(arrays, SPECS[op]["inputs"])]
        store = check_types(op, f"check {kind}", [d.type_name for d in descs])  # what enqueue checks
        out.append({"kind": kind, "op": op, "kernel": SPECS[op]["kernel"], "arrays": arrays, "descs": descs,
                    "store": store, "out_shape": arrays[SPECS[op]["out_like"]].shape, "ref": ref})
    return out


def step_aot(ctx: CheckContext) -> StepResult:
    """The AOT cubins/PTX from `smpler-aot`, loaded and launched by the plugins' own code (`trt.launch`:
    resolve_function picks cubin or PTX for this driver; PreparedLaunch is what enqueue calls), vs the PyTorch
    attention path on the CPU."""
    name = "aot-kernels-via-plugin-launch"
    if not ctx.cuda:
        return skipped(name, no_cuda(ctx))
    from ..plugins.kernel_store import check_kernels_for, resolve_kernel_dir
    from ..trt import launch as L
    from ..trt.plugins import SPECS

    try:
        cu = L.cuda_driver()
    except SmplerError as e:
        return skipped(name, str(e))
    use_torch = ctx.torch_cuda
    device = 0
    if use_torch:
        import torch

        device = torch.cuda.current_device()
    # torch creates its context lazily (first allocation), so the step may start with none current: launch
    # retains the device's primary context and makes it current, the one torch and cuda_mem then use too.
    context = L.current_context(cu, device)
    buf = DeviceBuffers(use_torch)
    try:
        sm = L.context_sm(cu, context)
        kdir = resolve_kernel_dir(ctx.kernel_dir)
        try:
            check_kernels_for(kdir, sm, [spec["kernel"] for spec in SPECS.values()], "smpler-check-gpu")
        except SmplerError as e:
            return skipped(name, str(e), sm=sm, kernel_dir=str(kdir))
        nums = {"sm": sm, "driver": L.driver_version(cu), "kernel_dir": str(kdir),
                "device_memory": "torch" if use_torch else "cuda-python"}
        fails = []
        for dtype in ("fp32", "fp16"):
            for c in aot_cases(dtype):
                kind, arrays, descs, ref = c["kind"], c["arrays"], c["descs"], c["ref"]
                fn = L.resolve_function(cu, c["kernel"], c["store"], kdir)
                ptrs = [buf.put(a) for a in arrays]
                out_like = np.zeros(c["out_shape"], arrays[0].dtype)
                out = buf.put(out_like)
                launch = L.PreparedLaunch(cu, fn, [d.dims for d in descs], f"check {kind}")
                launch([*ptrs, out], buf.stream)
                got = buf.get(out, out_like).astype(np.float32)
                err = float(np.abs(got - ref.numpy()).max())
                nums[f"{kind} {dtype}"] = {"image": fn.image, "max_abs": err,
                                           "ms": buf.time_ms(lambda: launch([*ptrs, out], buf.stream), ctx.iters)}
                within(fails, f"{kind} {dtype} max abs error", err, KERNEL_ATOL[dtype])
        return judged(name, nums, fails)
    finally:
        buf.close()

