"""Self-check step for TensorRTSession's CUDA plumbing (cuda_mem) on a tiny engine, and what TensorRT steps share:
whether an installed TensorRT can build for this GPU, the tiny engine and its ONNX Runtime CPU reference."""

from __future__ import annotations

import numpy as np

from ..errors import SmplerError
from .core import CheckContext, StepResult, judged, skipped, within
from .reference import no_cuda, timed_ms

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
            return skipped(name, no_cuda(ctx))
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
        nums["replay_b1_device_ms_p50"] = timed_ms(sess, x1, ctx.iters)
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

