"""The self-check's steps: each takes the `CheckContext` and returns a `StepResult` (executed / skipped / failed).

Order: cheap and fundamental first (model on CUDA, Triton JIT, AOT binaries through the plugin launch code,
TensorRTSession's CUDA plumbing on a tiny engine), then what builds (ORT CUDA EP, SMPLer engines, ORT TensorRT EP),
so a short time budget still covers the paths most likely to break.
"""

from __future__ import annotations

import statistics

import numpy as np

from ..errors import SmplerError
from .core import CheckContext, StepResult, judged, skipped, within

# Tolerances (vertices, mm) against the PyTorch fp32 forward on the CPU. fp32 on CUDA runs with TF32 off (the
# torch steps turn it off; fp32 means fp32), so only summation order differs; the fp16 policy measured 0.12 mm
# mean / 0.84 mm max in ONNX Runtime on CPU; TF32 engines and EPs (TensorRT's and ORT's default) are fp16-like.
FP32_MM = (0.05, 0.5)  # mean, max
HALF_MM = (1.0, 5.0)
KERNEL_ATOL = {"fp32": 2e-4, "fp16": 2e-2}  # vs the fp32 torch path (|agg| <= ~4; see tests/test_kernels.py)


def _no_cuda(ctx: CheckContext) -> str:
    if ctx.device != "cuda":
        return "--device cpu: GPU paths are not run"
    if ctx.cuda_reason:
        return f"no usable CUDA device: {ctx.cuda_reason}"
    return f"needs torch on the GPU: {ctx.torch_reason}"


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 4) if xs else None


def images(ctx: CheckContext) -> np.ndarray:
    if "images" not in ctx.cache:
        from ..preprocess import heldout_crops

        ctx.cache["images"] = heldout_crops(2, 0)[0]
    return ctx.cache["images"]


def cpu_reference(ctx: CheckContext):
    """The PyTorch fp32 forward on the CPU (the reference every GPU path is compared with), and its model."""
    if "reference" not in ctx.cache:
        from ..runtime.torch_session import TorchSession

        s = TorchSession()
        ctx.cache["model"] = s.model
        ctx.cache["reference"] = s.infer(images(ctx))
    return ctx.cache["reference"]


def _vertex_error(ref, out) -> dict:
    from ..fidelity import fidelity

    v = fidelity(ref, out)["vertices"]
    return {"vertices_mean_mm": v["mean_mm"], "vertices_max_mm": v["max_mm"]}


def _judge_mm(failures, label, err: dict, limits) -> None:
    within(failures, f"{label} vertices mean", err["vertices_mean_mm"], limits[0], " mm")
    within(failures, f"{label} vertices max", err["vertices_max_mm"], limits[1], " mm")


def _timed(sess, x, iters: int) -> float | None:
    """Median CUDA-event time (ms) of `iters` calls of a session that records `last_device_ms`."""
    ms = []
    for _ in range(iters):
        sess.infer(x)
        ms.append(sess.last_device_ms)
    return _median(ms)


# --- 1. the PyTorch model on CUDA ---------------------------------------------------------------------------------

def step_model_cuda(ctx: CheckContext) -> StepResult:
    """TorchSession on CUDA (fp32 eager, fp32 CUDA graphs, fp16 CUDA graphs) vs the CPU fp32 forward, in mm."""
    name = "model-cuda-vs-cpu"
    if not ctx.torch_cuda:
        return skipped(name, _no_cuda(ctx))
    import torch

    from ..runtime.torch_session import TorchSession

    x, ref = images(ctx), cpu_reference(ctx)
    nums, fails = {}, []
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for label, kw, limits in (("fp32 eager", {"precision": "fp32", "cuda_graphs": False}, FP32_MM),
                                  ("fp32 cuda-graph", {"precision": "fp32", "cuda_graphs": True}, FP32_MM),
                                  ("fp16 cuda-graph", {"precision": "fp16", "cuda_graphs": True}, HALF_MM)):
            s = TorchSession(ctx.cache["model"], device="cuda", **kw)
            try:
                err = _vertex_error(ref, s.infer(x))
                nums[label] = err | {"device_ms_p50": _timed(s, x, ctx.iters), "batch": len(x)}
                if s.cuda_graphs.disabled_reason:
                    fails.append(f"{label}: CUDA graph capture failed ({s.cuda_graphs.disabled_reason})")
                _judge_mm(fails, label, err, limits)
            finally:
                s.close()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    return judged(name, nums, fails)


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


def _cuda_ms(fn, iters: int) -> float:
    from ..runtime.timing import EventTimer, TorchEvents

    fn()  # warm-up
    return _median(EventTimer(TorchEvents()).time_ms(fn, iters))


def step_triton(ctx: CheckContext) -> StepResult:
    """The Triton kernels, JIT-compiled for this GPU (any Triton version), vs the PyTorch attention path; under
    `--interpret` on CPU tensors through Triton's interpreter (the check's own CPU test)."""
    name = "triton-jit-vs-torch"
    if not (ctx.torch_cuda or ctx.interpret):
        return skipped(name, _no_cuda(ctx) + " (--interpret runs the kernels through Triton's interpreter on CPU)")
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
                nums[f"{kind} {dtype} triton_ms"] = _cuda_ms(triton_fn, ctx.iters)
                nums[f"{kind} {dtype} torch_ms"] = _cuda_ms(torch_fn, ctx.iters)
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
            return _cuda_ms(fn, iters)
        from ..runtime.timing import EventTimer

        timer = EventTimer(self.cm, self.stream)  # cuda_mem's events on this stream
        try:
            return _median(timer.time_ms(fn, iters))
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
        return skipped(name, _no_cuda(ctx))
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


# --- 4. TensorRTSession's CUDA plumbing (cuda_mem) on a tiny engine ------------------------------------------------

def _trt_flavour() -> tuple[object, str] | str:
    from ..trt.importer import import_trt

    try:
        return import_trt(None)
    except SmplerError as e:
        return str(e)


def trt_for_this_gpu() -> tuple[object, str, int] | str:
    """(trt module, flavour, SM) when an installed TensorRT can build and run engines for this GPU, else why not
    (TensorRT-RTX targets RTX-class GPUs only: no sm_90 datacenter parts)."""
    got = _trt_flavour()
    if isinstance(got, str):
        return got
    trt, flavour = got
    from ..trt import cuda_mem

    try:
        sm = cuda_mem.device_sm()
    except Exception as e:  # noqa: BLE001 - no driver / no device: a reason, not a crash
        return f"cannot query the GPU through cuda-python: {e.__class__.__name__}: {e}"
    if flavour == "tensorrt-rtx":
        from ..engine.targets import valid_sms

        if sm not in valid_sms(trt):
            return (f"TensorRT-RTX {trt.__version__} does not target sm_{sm} (it targets "
                    f"{', '.join(map(str, valid_sms(trt)))}); install TensorRT: pip install 'smpler-deploy[trt]'")
    return trt, flavour, sm


def tiny_engine(ctx: CheckContext):
    """A tiny SMPLer-shaped engine (builds in seconds) and its ONNX Runtime CPU reference."""
    if "tiny_engine" not in ctx.cache:
        from ..engine.builder import build_engine
        from ..engine.options import EngineOptions
        from ..trt import cuda_mem
        from .tiny_graph import write_tiny_graph

        onnx_path = write_tiny_graph(ctx.work_dir / "tiny_fp32.onnx")
        trt, flavour = _trt_flavour()
        sms = [cuda_mem.device_sm()] if flavour == "tensorrt-rtx" else None  # TRT-RTX: no local default
        engine = ctx.work_dir / "tiny_fp32.engine"
        build_engine(onnx_path, engine, EngineOptions(flavour=flavour, sms=sms, batch=[1, 1, 4], tf32=False),
                     force=True, log=ctx.log)
        ctx.cache["tiny_engine"] = engine
        ctx.cache["tiny_reference"] = _ort_cpu(onnx_path)
    return ctx.cache["tiny_engine"], ctx.cache.get("tiny_reference")


def _ort_cpu(onnx_path):
    import onnxruntime as ort

    from ..outputs import INPUT_NAME, OUTPUT_NAMES

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})


def step_trt_session(ctx: CheckContext) -> StepResult:
    """TensorRTSession with the real cuda_mem: pinned/device buffers, CUDA-graph capture after warm-up, replay,
    regrow on a larger batch (graph dropped and re-captured), no shrink on a smaller one; outputs vs ONNX Runtime."""
    name = "trt-session-cuda-mem"
    if ctx.trt_api is None:
        if not ctx.cuda:
            return skipped(name, _no_cuda(ctx))
        got = trt_for_this_gpu()
        if isinstance(got, str):
            return skipped(name, got)
    from ..runtime.tensorrt import TensorRTSession

    engine, reference = tiny_engine(ctx)
    sess = TensorRTSession(engine, api=ctx.trt_api, warmup=2)
    try:
        rng = np.random.default_rng(0)
        big = min(4, sess.max_batch)
        x1 = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        xb = rng.standard_normal((big, 3, 224, 224)).astype(np.float32)
        fails, nums = [], {"engine": engine.name, "flavour": sess.manifest["trt"]["flavour"]}
        outs = [sess.infer(x1) for _ in range(3)]  # 2 warm-up enqueues, then capture + launch
        runtime_graphs = sess.cuda_graphs.mode == "runtime"  # TensorRT-RTX: its runtime captures, we never do
        captured = runtime_graphs or sess.cuda_graphs.captured > 0
        nums["cuda_graphs"] = "TensorRT-RTX runtime (whole-graph capture)" if runtime_graphs else "stream capture"
        nums["captured_b1"] = captured
        nums["replay_b1_device_ms_p50"] = _timed(sess, x1, ctx.iters)
        sizes = {n: b for n, (_, b) in sess.buffers.items()}
        for _ in range(3):
            outs_b = sess.infer(xb)
        grown = {n: b for n, (_, b) in sess.buffers.items()}
        nums["regrew"] = all(grown[n] > sizes[n] for n in sizes)  # every tensor scales with the batch
        nums["captured_b%d" % big] = runtime_graphs or sess.cuda_graphs.captured > 0
        ptrs = {n: p for n, (p, _) in sess.buffers.items()}
        sess.infer(x1)
        nums["kept_buffers_on_smaller_batch"] = ptrs == {n: p for n, (p, _) in sess.buffers.items()}
        if not captured:
            fails.append(f"no CUDA graph captured at batch 1 ({sess.cuda_graphs.disabled_reason or 'never captured'})")
        if not nums["regrew"] or not nums["kept_buffers_on_smaller_batch"]:
            fails.append("buffers did not grow for the larger batch or moved for the smaller one")
        if reference is not None:
            from ..outputs import OUTPUT_NAMES

            err = 0.0
            for x, o in ((x1, outs[-1]), (xb, outs_b)):
                for n, r in zip(OUTPUT_NAMES, reference(x)):
                    err = max(err, float(np.abs(getattr(o, n) - r).max()))
            nums["max_abs_vs_onnxruntime_cpu"] = err
            within(fails, "outputs vs ONNX Runtime CPU, max abs", err, 1e-3)
        return judged(name, nums, fails)
    finally:
        sess.close()


# --- 5-7. what builds: ONNX Runtime CUDA EP, SMPLer engines, ONNX Runtime TensorRT EP -----------------------------

def exported(ctx: CheckContext, precision: str, plugins: bool = False):
    key = f"onnx-{precision}{'-plugins' if plugins else ''}"
    if key not in ctx.cache:
        from ..export.onnx_export import export_onnx
        from ..precision import Precision

        cpu_reference(ctx)
        path = ctx.work_dir / f"smpler_{precision}{'_plugins' if plugins else ''}.onnx"
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        export_onnx(path, precision=Precision.parse(precision), model=ctx.cache["model"], plugins=plugins,
                    batch=(1, 2, 2))
        ctx.cache[key] = path
    return ctx.cache[key]


def _ort_step(name: str, provider: str, precision: str, limits):
    def step(ctx: CheckContext) -> StepResult:
        if not ctx.cuda:
            return skipped(name, _no_cuda(ctx))
        import onnxruntime as ort

        from ..runtime.ort_providers import check_available
        from ..runtime.ort_session import OnnxRuntimeSession

        try:
            check_available(provider, ort.get_available_providers())
        except SmplerError as e:
            return skipped(name, str(e))
        x, ref = images(ctx), cpu_reference(ctx)
        s = OnnxRuntimeSession(exported(ctx, precision), provider=provider, batches=(len(x),),
                               trt_cache=ctx.work_dir / "ort-trt")
        try:
            err = _vertex_error(ref, s.infer(x))
            nums = {"graph": precision, **err, "device_ms_p50": _timed(s, x, ctx.iters),
                    "providers": list(s.info.providers)}
            fails = []
            _judge_mm(fails, f"{provider} {precision}", err, limits)
            return judged(name, nums, fails)
        finally:
            s.close()

    step.__doc__ = f"ONNX Runtime's {provider} execution provider on the {precision} graph vs the CPU fp32 forward."
    return step


def step_engines(ctx: CheckContext) -> StepResult:
    """Real SMPLer engines built here (fp16; fp16 with the attention plugins when this SM has AOT kernels), run by
    TensorRTSession (CUDA graphs), vs the CPU fp32 forward in mm."""
    name = "smpler-engines"
    if not ctx.cuda:
        return skipped(name, _no_cuda(ctx))
    got = trt_for_this_gpu()
    if isinstance(got, str):
        return skipped(name, got)
    _, flavour, sm = got
    from ..engine.builder import build_engine
    from ..engine.options import EngineOptions
    from ..plugins.kernel_store import check_kernels_for, resolve_kernel_dir
    from ..runtime.tensorrt import TensorRTSession
    from ..trt.plugins import SPECS

    x, ref = images(ctx), cpu_reference(ctx)
    variants = [("fp16", False)]
    kernels = [spec["kernel"] for spec in SPECS.values()]  # what step_aot checks too
    try:
        check_kernels_for(resolve_kernel_dir(ctx.kernel_dir), sm, kernels, "check")
        variants.append(("fp16", True))
        plugin_note = None
    except SmplerError as e:
        plugin_note = f"plugin engine not built: {e}"
    nums, fails = {"flavour": flavour, "sm": sm, "builder_optimization_level": 2}, []
    if plugin_note:
        nums["plugins"] = plugin_note
    for precision, plugins in variants:
        label = precision + (" plugins" if plugins else "")
        if ctx.remaining() < (150 if plugins else 100):
            nums[label] = "not built: time budget spent"
            continue
        engine = ctx.work_dir / f"smpler_{precision}{'_plugins' if plugins else ''}.engine"
        # Builder optimization level 2 (TensorRT's default is 3): the builds must fit the check's 6 minutes;
        # the latency is that of this engine, not of the best tuned one (smpler-bench measures those).
        opts = EngineOptions(flavour=flavour, sms=[sm] if flavour == "tensorrt-rtx" else None,
                             batch=[1, len(x), len(x)], builder_optimization_level=2)
        build_engine(exported(ctx, precision, plugins), engine, opts, kernel_dir=ctx.kernel_dir, force=True,
                     log=ctx.log)
        s = TensorRTSession(engine, kernel_dir=ctx.kernel_dir)
        try:
            err = _vertex_error(ref, s.infer(x))
            nums[label] = err | {"device_ms_p50": _timed(s, x, ctx.iters), "cuda_graph": s.cuda_graphs.captured > 0}
            _judge_mm(fails, label, err, HALF_MM)
        finally:
            s.close()
    return judged(name, nums, fails)


# (name, function, estimated seconds on a datacenter GPU; the runner skips a step that would not fit)
STEPS = [
    ("model-cuda-vs-cpu", step_model_cuda, 30),
    ("triton-jit-vs-torch", step_triton, 20),
    ("aot-kernels-via-plugin-launch", step_aot, 10),
    ("trt-session-cuda-mem", step_trt_session, 20),
    ("ort-cuda-ep", _ort_step("ort-cuda-ep", "cuda", "fp32", HALF_MM), 40),
    ("smpler-engines", step_engines, 120),
    ("ort-tensorrt-ep", _ort_step("ort-tensorrt-ep", "tensorrt", "fp16", HALF_MM), 100),
]
STEP_NAMES = tuple(n for n, _, _ in STEPS)
