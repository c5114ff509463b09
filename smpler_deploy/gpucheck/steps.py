"""The self-check's steps, in order: each takes the `CheckContext` and returns a `StepResult` (executed / skipped /
failed).

Order: cheap and fundamental first (model on CUDA, Triton JIT, AOT binaries through the plugin launch code,
TensorRTSession's CUDA plumbing on a tiny engine), then what builds (ORT CUDA EP, SMPLer engines, ORT TensorRT EP),
so a short time budget still covers the paths most likely to break. The steps live by what they check:
`model_steps` (the whole model per backend, in mm), `kernel_steps` (the attention kernels), `session_steps`
(TensorRTSession's plumbing); `reference` holds what they share.
"""

from __future__ import annotations

from ..precision import FP32, Precision
from .kernel_steps import aot_cases, step_aot, step_triton
from .model_steps import ort_step, step_engines, step_model_cuda
from .reference import HALF_MM
from .session_steps import step_trt_session, trt_for_this_gpu

__all__ = ["STEPS", "STEP_NAMES", "aot_cases", "step_aot", "step_engines", "step_model_cuda", "step_triton",
           "step_trt_session", "trt_for_this_gpu"]

# (name, function, estimated seconds on a datacenter GPU; the runner skips a step that would not fit)
STEPS = [
    ("model-cuda-vs-cpu", step_model_cuda, 30),
    ("triton-jit-vs-torch", step_triton, 20),
    ("aot-kernels-via-plugin-launch", step_aot, 10),
    ("trt-session-cuda-mem", step_trt_session, 20),
    ("ort-cuda-ep", ort_step("ort-cuda-ep", "cuda", FP32, HALF_MM), 40),
    ("smpler-engines", step_engines, 120),
    ("ort-tensorrt-ep", ort_step("ort-tensorrt-ep", "tensorrt", Precision("fp16"), HALF_MM), 100),
]
STEP_NAMES = tuple(n for n, _, _ in STEPS)
