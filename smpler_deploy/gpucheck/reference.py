"""What every self-check step shares: the held-out images, the PyTorch fp32 CPU reference and the exported graphs
(built once per run, kept in `ctx.cache`), the tolerances, and how a result is measured (mm, CUDA-event medians)."""

from __future__ import annotations

import statistics

import numpy as np

from ..precision import Precision
from .core import CheckContext, within

# Tolerances (vertices, mm) against the PyTorch fp32 forward on the CPU. fp32 on CUDA runs with TF32 off (the
# torch steps turn it off; fp32 means fp32), so only summation order differs; the fp16 policy measured 0.12 mm
# mean / 0.84 mm max in ONNX Runtime on CPU; TF32 engines and EPs (TensorRT's and ORT's default) are fp16-like.
FP32_MM = (0.05, 0.5)  # mean, max
HALF_MM = (1.0, 5.0)
KERNEL_ATOL = {"fp32": 2e-4, "fp16": 2e-2}  # vs the fp32 torch path (|agg| <= ~4; see tests/test_kernels.py)


def no_cuda(ctx: CheckContext) -> str:
    """Why a GPU step is skipped on this machine."""
    if ctx.device != "cuda":
        return "--device cpu: GPU paths are not run"
    if ctx.cuda_reason:
        return f"no usable CUDA device: {ctx.cuda_reason}"
    return f"needs torch on the GPU: {ctx.torch_reason}"


def median(xs) -> float | None:
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


def vertex_error(ref, out) -> dict:
    from ..fidelity import fidelity

    v = fidelity(ref, out)["vertices"]
    return {"vertices_mean_mm": v["mean_mm"], "vertices_max_mm": v["max_mm"]}


def judge_mm(failures, label, err: dict, limits) -> None:
    within(failures, f"{label} vertices mean", err["vertices_mean_mm"], limits[0], " mm")
    within(failures, f"{label} vertices max", err["vertices_max_mm"], limits[1], " mm")


def timed_ms(sess, x, iters: int) -> float | None:
    """Median CUDA-event time (ms) of `iters` calls of a session that records `last_device_ms`."""
    ms = []
    for _ in range(iters):
        sess.infer(x)
        ms.append(sess.last_device_ms)
    return median(ms)


def cuda_ms(fn, iters: int) -> float:
    from ..runtime.timing import EventTimer, TorchEvents

    fn()  # warm-up
    return median(EventTimer(TorchEvents()).time_ms(fn, iters))


def exported(ctx: CheckContext, precision: Precision, plugins: bool = False):
    key = f"onnx-{precision}{'-plugins' if plugins else ''}"
    if key not in ctx.cache:
        from ..export.onnx_export import export_onnx

        cpu_reference(ctx)
        path = ctx.work_dir / f"smpler_{precision}{'_plugins' if plugins else ''}.onnx"
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        export_onnx(path, precision=precision, model=ctx.cache["model"], plugins=plugins,
                    batch=(1, 2, 2))
        ctx.cache[key] = path
    return ctx.cache[key]

