"""`open_session`: one entry point over the backends; heavy imports happen only for the backend asked for."""

from __future__ import annotations

from ..errors import SmplerError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def open_session(backend: str, *, precision: str = "fp32", path=None, variant: str = "smpler", threads=None, **kw):
    if backend == "torch":
        from .torch_session import TorchSession

        return TorchSession(variant=variant, precision=precision, threads=threads, **kw)
    if backend == "onnxruntime":
        if path is None:
            raise SmplerError("--onnx: the onnxruntime backend needs an ONNX file (smpler-export --format onnx)")
        from .ort_session import OnnxRuntimeSession

        return OnnxRuntimeSession(path, threads=threads, **kw)
    if backend == "tensorrt":
        if path is None:
            raise SmplerError("--engine: the tensorrt backend needs an engine file (smpler-export --format engine)")
        from .tensorrt import TensorRTSession

        return TensorRTSession(path, **kw)
    raise SmplerError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
