"""Thin CUDA runtime helpers over cuda-python (`cuda.bindings.runtime`, imported lazily).

Only what the TensorRT session needs: device/pinned buffers, a stream, async copies, graph capture. Every call
checks the `(err, value)` tuple cuda-python returns and raises with the CUDA error name.
No GPU in this project's CI: tests run this module over a stand-in of `cuda.bindings.runtime` that returns the
real `(cudaError_t, ...)` tuples (tests/cuda_bindings_standin.py).
"""

from __future__ import annotations

import ctypes

import numpy as np

from ..errors import SmplerError

_rt = None


def rt():
    """`cuda.bindings.runtime` (cuda-python 12.x with a CUDA 12 driver / JetPack 6, 13.x with CUDA 13, R580+)."""
    global _rt
    if _rt is None:
        try:
            from cuda.bindings import runtime
        except ImportError as e:
            raise SmplerError("the tensorrt backend needs cuda-python: pip install 'smpler-deploy[trt]' (CUDA 12 driver) "
                              f"or 'smpler-deploy[trt-cu13]' (CUDA 13, driver R580+) ({e})")
        _rt = runtime
    return _rt


class CudaError(RuntimeError):
    pass


def call(result):
    """Unpack cuda-python's `(err, *values)`; raise on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, name = rt().cudaGetErrorName(err)
        raise CudaError(name.decode() if isinstance(name, bytes) else str(name))
    return values[0] if len(values) == 1 else (tuple(values) or None)


def device_sm(device: int | None = None) -> int:
    """Compute capability of the current (or given) device as an int: 8.9 -> 89. The first CUDA call of a
    session, so a machine without a usable GPU gets a one-line error here."""
    r = rt()
    try:
        dev = call(r.cudaGetDevice()) if device is None else device
    except CudaError as e:
        from cuda import bindings

        why = {"cudaErrorInsufficientDriver": f"the driver is older than cuda-python {bindings.__version__} needs; "
                                              "install the cuda-python of the driver's CUDA major: smpler-deploy[trt] "
                                              "(CUDA 12) or [trt-cu13] (CUDA 13, R580+)",
               "cudaErrorNoDevice": "no NVIDIA GPU is visible"}.get(str(e), "see docs/gpu-install.md")
        raise SmplerError(f"the tensorrt backend found no usable CUDA device ({e}): {why}") from None
    major = call(r.cudaDeviceGetAttribute(r.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, dev))
    minor = call(r.cudaDeviceGetAttribute(r.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, dev))
    return major * 10 + minor


def malloc(nbytes: int) -> int:
    return int(call(rt().cudaMalloc(nbytes)))


def free(ptr: int) -> None:
    call(rt().cudaFree(ptr))


def host_alloc(nbytes: int) -> tuple[int, np.ndarray]:
    """Pinned host buffer: (pointer, uint8 numpy view). Pinned memory makes the async copies truly async."""
    ptr = int(call(rt().cudaMallocHost(nbytes)))
    view = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), dtype=np.uint8)
    return ptr, view


def host_free(ptr: int) -> None:
    call(rt().cudaFreeHost(ptr))


def stream_create():
    # Non-default stream: graph capture is illegal on the legacy default stream.
    r = rt()
    return call(r.cudaStreamCreateWithFlags(r.cudaStreamNonBlocking))


def stream_destroy(stream) -> None:
    call(rt().cudaStreamDestroy(stream))


def stream_handle(stream) -> int:
    return int(stream)


def synchronize(stream) -> None:
    call(rt().cudaStreamSynchronize(stream))


def memcpy_htod(dst: int, src: int, nbytes: int, stream) -> None:
    r = rt()
    call(r.cudaMemcpyAsync(dst, src, nbytes, r.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))


def memcpy_dtoh(dst: int, src: int, nbytes: int, stream) -> None:
    r = rt()
    call(r.cudaMemcpyAsync(dst, src, nbytes, r.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))


def begin_capture(stream) -> None:
    # Thread-local: other threads' CUDA calls (e.g. another session) do not break this capture.
    r = rt()
    call(r.cudaStreamBeginCapture(stream, r.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))


def end_capture(stream):
    """Returns the captured graph (raises if capture was invalidated)."""
    return call(rt().cudaStreamEndCapture(stream))


def end_capture_on_error(stream) -> None:
    """After a failed capture (trtexec's endCaptureOnError): leave capture mode if the stream is still in it (an
    invalidated capture too), drop the partial graph, and clear this thread's CUDA error, so the plain enqueues
    that follow do not report the capture's leftover error as their own."""
    r = rt()
    err, status = r.cudaStreamIsCapturing(stream)
    if int(err) == 0 and status != r.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone:
        err, graph = r.cudaStreamEndCapture(stream)
        if int(err) == 0 and graph is not None:
            call(r.cudaGraphDestroy(graph))
    r.cudaGetLastError()  # returns and resets the thread's last error


def graph_instantiate(graph):
    return call(rt().cudaGraphInstantiate(graph, 0))


def graph_launch(graph_exec, stream) -> None:
    call(rt().cudaGraphLaunch(graph_exec, stream))


def graph_destroy(graph, graph_exec) -> None:
    if graph_exec is not None:
        call(rt().cudaGraphExecDestroy(graph_exec))
    if graph is not None:
        call(rt().cudaGraphDestroy(graph))


def event_create():
    return call(rt().cudaEventCreate())


def event_record(event, stream) -> None:
    call(rt().cudaEventRecord(event, stream))


def event_elapsed_ms(start, end) -> float:
    return float(call(rt().cudaEventElapsedTime(start, end)))


def event_destroy(event) -> None:
    call(rt().cudaEventDestroy(event))


def device_memory_used_mb() -> float:
    """Device memory in use (all processes), from cudaMemGetInfo."""
    free, total = call(rt().cudaMemGetInfo())
    return (int(total) - int(free)) / 2**20
