"""Self-check steps for the whole SMPLer model on each GPU backend, in mm against the PyTorch fp32 CPU forward:
TorchSession on CUDA, ONNX Runtime's CUDA and TensorRT execution providers, and SMPLer engines built here."""

from __future__ import annotations

from ..errors import SmplerError
from ..precision import FP32, Precision
from .core import CheckContext, StepResult, judged, skipped
from .reference import FP32_MM, HALF_MM, cpu_reference, exported, images, judge_mm, no_cuda, timed_ms, vertex_error
from .session_steps import trt_for_this_gpu

# --- 1. the PyTorch model on CUDA ---------------------------------------------------------------------------------

def step_model_cuda(ctx: CheckContext) -> StepResult:
    """TorchSession on CUDA (fp32 eager, fp32 CUDA graphs, fp16 CUDA graphs) vs the CPU fp32 forward, in mm."""
    name = "model-cuda-vs-cpu"
    if not ctx.torch_cuda:
        return skipped(name, no_cuda(ctx))
    import torch

    from ..runtime.torch_session import TorchSession

    x, ref = images(ctx), cpu_reference(ctx)
    nums, fails = {}, []
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        fp16 = Precision("fp16")
        for label, kw, limits in (("fp32 eager", {"precision": FP32, "cuda_graphs": False}, FP32_MM),
                                  ("fp32 cuda-graph", {"precision": FP32, "cuda_graphs": True}, FP32_MM),
                                  ("fp16 cuda-graph", {"precision": fp16, "cuda_graphs": True}, HALF_MM)):
            s = TorchSession(ctx.cache["model"], device="cuda", **kw)
            try:
                err = vertex_error(ref, s.infer(x))
                nums[label] = err | {"device_ms_p50": timed_ms(s, x, ctx.iters), "batch": len(x)}
                if s.cuda_graphs.disabled_reason:
                    fails.append(f"{label}: CUDA graph capture failed ({s.cuda_graphs.disabled_reason})")
                judge_mm(fails, label, err, limits)
            finally:
                s.close()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    return judged(name, nums, fails)


def ort_step(name: str, provider: str, precision: Precision, limits):
    def step(ctx: CheckContext) -> StepResult:
        if not ctx.cuda:
            return skipped(name, no_cuda(ctx))
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
            err = vertex_error(ref, s.infer(x))
            nums = {"graph": precision.name, **err, "device_ms_p50": timed_ms(s, x, ctx.iters),
                    "providers": list(s.info.providers)}
            fails = []
            judge_mm(fails, f"{provider} {precision}", err, limits)
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
        return skipped(name, no_cuda(ctx))
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
    variants = [(Precision("fp16"), False)]
    kernels = [spec["kernel"] for spec in SPECS.values()]  # what step_aot checks too
    try:
        check_kernels_for(resolve_kernel_dir(ctx.kernel_dir), sm, kernels, "check")
        variants.append((Precision("fp16"), True))
        plugin_note = None
    except SmplerError as e:
        plugin_note = f"plugin engine not built: {e}"
    nums, fails = {"flavour": flavour, "sm": sm, "builder_optimization_level": 2}, []
    if plugin_note:
        nums["plugins"] = plugin_note
    for precision, plugins in variants:
        label = precision.name + (" plugins" if plugins else "")
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
            err = vertex_error(ref, s.infer(x))
            nums[label] = err | {"device_ms_p50": timed_ms(s, x, ctx.iters), "cuda_graph": s.cuda_graphs.captured > 0}
            judge_mm(fails, label, err, HALF_MM)
        finally:
            s.close()
    return judged(name, nums, fails)

