"""`open_session`: one entry point over the backends; heavy imports happen only for the backend asked for."""

from __future__ import annotations

from ..errors import OptionError
from ..precision import FP32, Precision

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def open_session(backend: str, *, precision: Precision | str = FP32, path=None, variant: str = "smpler",
                 threads=None, **kw):
    """precision: the torch backend's (a `Precision` or its report spelling); a graph or engine carries its own.
    Errors name the option (`OptionError` fields onnx, engine, backend); a command names its flag."""
    if backend == "torch":
        from .torch_session import TorchSession

        return TorchSession(variant=variant, precision=precision, threads=threads, **kw)
    if backend == "onnxruntime":
        if path is None:
            raise OptionError("onnx", None, "the onnxruntime backend needs an ONNX file (smpler-export writes one)")
        from .ort_session import OnnxRuntimeSession

        return OnnxRuntimeSession(path, threads=threads, **kw)
    if backend == "tensorrt":
        if path is None:
            raise OptionError("engine", None, "the tensorrt backend needs an engine file (smpler-export builds one "
                              "with format engine)")
        from .tensorrt import TensorRTSession

        return TensorRTSession(path, **kw)
    raise OptionError("backend", backend, f"expected one of {', '.join(BACKENDS)}")
