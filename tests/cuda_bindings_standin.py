"""Stand-in for `cuda.bindings.driver` and `cuda.bindings.runtime` (no GPU here), so `trt/cuda_mem.py` and
`trt/launch.py` run for real in tests: every function returns the real `(CUresult | cudaError_t, *values)` tuple,
with the real enums and handle types of the installed cuda-bindings (which imports without a driver), and refuses
what the driver refuses: no current context, a function of another context, dynamic shared memory over 48 KiB
without the opt-in or over the device's opt-in limit, PTX newer than the driver, CUDA 13 cubins on a CUDA 12 driver,
graph capture broken by a synchronizing call. "Device" memory is host memory, so copies really move the bytes.

`test_cuda_bindings_standin.py` checks every function here against the installed module: same name, same
parameter names, and as many returned values as its docstring lists.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import types

from cuda.bindings import driver as _d
from cuda.bindings import runtime as _r

CUresult, cudaError_t = _d.CUresult, _r.cudaError_t
OK, RT_OK = CUresult.CUDA_SUCCESS, cudaError_t.cudaSuccess
A = _d.CUdevice_attribute


def returns(n: int):
    """The function returns (status, n values), as its real counterpart does; checked at every call."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kw):
            res = fn(*args, **kw)
            assert isinstance(res, tuple) and len(res) == n + 1 and isinstance(res[0], (CUresult, cudaError_t)), res
            return res

        call.n_values = n
        return call

    return wrap


class _Buf:
    def __init__(self, n):
        self.raw = (ctypes.c_uint8 * max(n, 1))()
        self.addr, self.n = ctypes.addressof(self.raw), n


class FakeGpu:
    """One machine: `devices` GPUs of compute capability `sm`, a driver supporting CUDA `driver_version`."""

    def __init__(self, sm=89, devices=1, driver_version=12080, optin_shared=99 * 1024, used_mb=512):
        self.sm, self.n_devices, self.version, self.optin, self.used_mb = sm, devices, driver_version, optin_shared, used_mb
        self.initialized = False
        self.primary: dict[int, int] = {}  # device -> primary context handle (once retained)
        self.tls = threading.local()  # per thread: ctx (driver), device (runtime), last_error (runtime)
        self.mem: dict[int, _Buf] = {}  # device and pinned allocations
        self.streams: dict[int, dict] = {}
        self.graphs, self.execs, self.events = set(), set(), {}
        self.modules: dict[int, tuple[int, bytes]] = {}  # module -> (context, image)
        self.functions: dict[int, dict] = {}
        self.launches: list[dict] = []
        self._next = 0x7000
        self.driver = self._module(_d, "driver")
        self.runtime = self._module(_r, "runtime")

    def _handle(self) -> int:
        self._next += 0x100
        return self._next

    def _module(self, real, name):
        mod = types.ModuleType(f"cuda_bindings_standin.{name}")
        for attr in dir(real):  # the real enums, handle types and constants
            v = getattr(real, attr)
            if isinstance(v, type) or not callable(v):
                setattr(mod, attr, v)
        prefix = "cu" if name == "driver" else "cuda"
        for attr in dir(self):
            fn = getattr(self, attr)
            if attr.startswith(prefix) and callable(fn) and hasattr(fn, "n_values") and (
                    name == "runtime" or not attr.startswith("cuda")):
                setattr(mod, attr, fn)
        mod.__standin_functions__ = sorted(a for a in dir(mod) if hasattr(getattr(mod, a), "n_values"))
        return mod

    # -- thread state
    def _ctx(self) -> int:
        return getattr(self.tls, "ctx", 0)

    def _rt_fail(self, err):
        self.tls.last_error = err
        return err

    def _runtime_ctx(self):
        """The runtime API makes the current device's primary context current on first use, as cudart does."""
        dev = getattr(self.tls, "device", 0)
        if dev not in self.primary:
            self.primary[dev] = self._handle()
        if not self._ctx():
            self.tls.ctx = self.primary[dev]

    def _capturing(self, stream) -> dict | None:
        s = self.streams.get(int(stream))
        return s if s and s["capture"] else None

    def _break_captures(self):
        """A synchronizing call while a stream captures invalidates that capture (cudaErrorStreamCaptureUnsupported)."""
        broken = False
        for s in self.streams.values():
            if s["capture"] == "active":
                s["capture"], broken = "invalidated", True
        return broken

    # ---------------------------------------------------------------------------------------------- driver
    @returns(0)
    def cuInit(self, Flags):
        self.initialized = True
        return (OK,)

    @returns(1)
    def cuDeviceGet(self, ordinal):
        if not self.initialized:
            return CUresult.CUDA_ERROR_NOT_INITIALIZED, None
        if not 0 <= ordinal < self.n_devices:
            return CUresult.CUDA_ERROR_INVALID_DEVICE, None
        return OK, _d.CUdevice(ordinal)

    @returns(1)
    def cuCtxGetCurrent(self):
        return OK, _d.CUcontext(self._ctx())

    @returns(0)
    def cuCtxSetCurrent(self, ctx):
        c = int(ctx)
        if c and c not in self.primary.values():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        self.tls.ctx = c
        return (OK,)

    @returns(1)
    def cuDevicePrimaryCtxRetain(self, dev):
        if not self.initialized:
            return CUresult.CUDA_ERROR_NOT_INITIALIZED, None
        d = int(dev)
        if not 0 <= d < self.n_devices:
            return CUresult.CUDA_ERROR_INVALID_DEVICE, None
        self.primary.setdefault(d, self._handle())
        return OK, _d.CUcontext(self.primary[d])  # retained, not made current

    @returns(1)
    def cuCtxGetDevice(self):
        ctx = self._ctx()
        if not ctx:
            return CUresult.CUDA_ERROR_INVALID_CONTEXT, None
        return OK, _d.CUdevice(next(d for d, c in self.primary.items() if c == ctx))

    @returns(1)
    def cuDeviceGetAttribute(self, attrib, dev):
        values = {A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: self.sm // 10,
                  A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: self.sm % 10,
                  A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: self.optin}
        if not isinstance(attrib, A) or attrib not in values:
            return CUresult.CUDA_ERROR_INVALID_VALUE, None
        return OK, values[attrib]

    @returns(1)
    def cuDriverGetVersion(self):
        return OK, self.version

    @returns(1)
    def cuModuleLoadData(self, image):
        if not self._ctx():
            return CUresult.CUDA_ERROR_INVALID_CONTEXT, None
        data = bytes(image)
        if data[:4] == b"\x7fELF":
            if data[7] != 0x41 or data[8] > (8 if self.version >= 13000 else 7):  # CUDA ELF ABI 8 = CUDA 13
                return CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU, None
            if f"sm_{self.sm}".encode() not in data:
                return CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU, None
        elif b".version" in data:
            if not data.endswith(b"\0"):
                return CUresult.CUDA_ERROR_INVALID_IMAGE, None
            isa = data.split(b".version", 1)[1].split()[0].decode()
            from smpler_deploy.plugins.kernel_store import PTX_ISA_DRIVER

            if PTX_ISA_DRIVER.get(isa, 10**9) > self.version:
                return CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION, None
        else:
            return CUresult.CUDA_ERROR_INVALID_IMAGE, None
        h = self._handle()
        self.modules[h] = (self._ctx(), data)
        return OK, _d.CUmodule(h)

    @returns(1)
    def cuModuleGetFunction(self, hmod, name):
        ctx, image = self.modules.get(int(hmod), (0, b""))
        if not ctx:
            return CUresult.CUDA_ERROR_INVALID_HANDLE, None
        if bytes(name) not in image:
            return CUresult.CUDA_ERROR_NOT_FOUND, None
        h = self._handle()
        self.functions[h] = {"ctx": ctx, "name": bytes(name).decode(), "max_dynamic_shared": 48 * 1024}
        return OK, _d.CUfunction(h)

    @returns(0)
    def cuFuncSetAttribute(self, hfunc, attrib, value):
        fn = self.functions.get(int(hfunc))
        if fn is None:
            return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
        if attrib == _d.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            if value > self.optin:
                return (CUresult.CUDA_ERROR_INVALID_VALUE,)
            fn["max_dynamic_shared"] = value
        return (OK,)

    @returns(0)
    def cuLaunchKernel(self, f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                       hStream, kernelParams, extra):
        fn = self.functions.get(int(f))
        if fn is None:
            return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
        if fn["ctx"] != self._ctx():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        if blockDimX * blockDimY * blockDimZ > 1024 or sharedMemBytes > fn["max_dynamic_shared"]:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.launches.append({"function": fn["name"], "grid": (gridDimX, gridDimY, gridDimZ),
                              "block": (blockDimX, blockDimY, blockDimZ), "shared": sharedMemBytes,
                              "stream": int(hStream), "params": int(kernelParams)})
        return (OK,)

    @returns(1)
    def cuGetErrorName(self, error):
        return OK, error.name.encode()

    # --------------------------------------------------------------------------------------------- runtime
    @returns(1)
    def cudaGetErrorName(self, error):
        return RT_OK, error.name.encode()

    @returns(1)
    def cudaGetDevice(self):
        return RT_OK, getattr(self.tls, "device", 0)

    @returns(0)
    def cudaSetDevice(self, device):
        if not 0 <= device < self.n_devices:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidDevice),)
        self.tls.device = device
        if device in self.primary:
            self.tls.ctx = self.primary[device]
        else:
            self.tls.ctx = 0
            self._runtime_ctx()
        return (RT_OK,)

    @returns(1)
    def cudaDeviceGetAttribute(self, attr, device):
        a = _r.cudaDeviceAttr
        values = {a.cudaDevAttrComputeCapabilityMajor: self.sm // 10, a.cudaDevAttrComputeCapabilityMinor: self.sm % 10}
        if attr not in values:
            return self._rt_fail(cudaError_t.cudaErrorInvalidValue), None
        return RT_OK, values[attr]

    def _alloc(self, size):
        self._runtime_ctx()
        if self._capturing_any():
            self._break_captures()
            return self._rt_fail(cudaError_t.cudaErrorStreamCaptureUnsupported), None
        b = _Buf(size)
        self.mem[b.addr] = b
        return RT_OK, b.addr

    def _capturing_any(self):
        return any(s["capture"] == "active" for s in self.streams.values())

    @returns(1)
    def cudaMalloc(self, size):
        return self._alloc(size)

    @returns(1)
    def cudaMallocHost(self, size):
        return self._alloc(size)

    @returns(0)
    def cudaFree(self, devPtr):
        if self.mem.pop(int(devPtr), None) is None:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidValue),)
        return (RT_OK,)

    cudaFreeHost = returns(0)(lambda self, ptr: FakeGpu.cudaFree.__wrapped__(self, ptr))

    @returns(1)
    def cudaStreamCreateWithFlags(self, flags):
        self._runtime_ctx()
        h = self._handle()
        self.streams[h] = {"capture": None, "flags": flags}
        return RT_OK, _r.cudaStream_t(h)

    @returns(0)
    def cudaStreamDestroy(self, stream):
        if self.streams.pop(int(stream), None) is None:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidResourceHandle),)
        return (RT_OK,)

    @returns(0)
    def cudaStreamSynchronize(self, stream):
        if self._capturing(stream):  # illegal while capturing: invalidates the capture
            self._break_captures()
            return (self._rt_fail(cudaError_t.cudaErrorStreamCaptureUnsupported),)
        return (RT_OK,)

    @returns(0)
    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        if int(stream) and int(stream) not in self.streams:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidResourceHandle),)
        k = _r.cudaMemcpyKind
        device_side = {k.cudaMemcpyHostToDevice: [dst], k.cudaMemcpyDeviceToHost: [src],
                       k.cudaMemcpyDeviceToDevice: [dst, src]}.get(kind, [])  # host memory may be pageable
        for p in map(int, device_side):
            if not any(b.addr <= p and p + count <= b.addr + b.n for b in self.mem.values()):
                return (self._rt_fail(cudaError_t.cudaErrorInvalidValue),)
        ctypes.memmove(int(dst), int(src), count)
        return (RT_OK,)

    @returns(0)
    def cudaStreamBeginCapture(self, stream, mode):
        s = self.streams.get(int(stream))
        if s is None:  # includes the legacy default stream 0: capture is illegal there
            return (self._rt_fail(cudaError_t.cudaErrorStreamCaptureUnsupported),)
        if s["capture"]:
            return (self._rt_fail(cudaError_t.cudaErrorIllegalState),)
        s["capture"] = "active"
        return (RT_OK,)

    @returns(1)
    def cudaStreamEndCapture(self, stream):
        s = self.streams.get(int(stream))
        if s is None or not s["capture"]:
            return self._rt_fail(cudaError_t.cudaErrorIllegalState), None
        state, s["capture"] = s["capture"], None  # capture ends whatever happened
        if state == "invalidated":
            return self._rt_fail(cudaError_t.cudaErrorStreamCaptureInvalidated), None
        h = self._handle()
        self.graphs.add(h)
        return RT_OK, _r.cudaGraph_t(h)

    @returns(1)
    def cudaStreamIsCapturing(self, stream):
        st = _r.cudaStreamCaptureStatus
        s = self.streams.get(int(stream))
        if s is None:
            return self._rt_fail(cudaError_t.cudaErrorInvalidResourceHandle), None
        return RT_OK, {None: st.cudaStreamCaptureStatusNone, "active": st.cudaStreamCaptureStatusActive,
                       "invalidated": st.cudaStreamCaptureStatusInvalidated}[s["capture"]]

    @returns(1)
    def cudaGraphInstantiate(self, graph, flags):
        if int(graph) not in self.graphs:
            return self._rt_fail(cudaError_t.cudaErrorInvalidValue), None
        h = self._handle()
        self.execs.add(h)
        return RT_OK, _r.cudaGraphExec_t(h)

    @returns(0)
    def cudaGraphLaunch(self, graphExec, stream):
        if int(graphExec) not in self.execs:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidValue),)
        return (RT_OK,)

    @returns(0)
    def cudaGraphExecDestroy(self, graphExec):
        self.execs.discard(int(graphExec))
        return (RT_OK,)

    @returns(0)
    def cudaGraphDestroy(self, graph):
        self.graphs.discard(int(graph))
        return (RT_OK,)

    @returns(1)
    def cudaEventCreate(self):
        self._runtime_ctx()
        h = self._handle()
        self.events[h] = None
        return RT_OK, _r.cudaEvent_t(h)

    @returns(0)
    def cudaEventRecord(self, event, stream):
        if int(event) not in self.events:
            return (self._rt_fail(cudaError_t.cudaErrorInvalidResourceHandle),)
        self.events[int(event)] = len(self.launches)
        return (RT_OK,)

    @returns(1)
    def cudaEventElapsedTime(self, start, end):
        a, b = self.events.get(int(start)), self.events.get(int(end))
        if a is None or b is None:
            return self._rt_fail(cudaError_t.cudaErrorInvalidResourceHandle), None
        return RT_OK, 0.25 * (b - a)  # a quarter of a millisecond per recorded launch

    @returns(0)
    def cudaEventDestroy(self, event):
        self.events.pop(int(event), None)
        return (RT_OK,)

    @returns(2)
    def cudaMemGetInfo(self):
        total = 24 * 2**30
        return RT_OK, total - self.used_mb * 2**20 - sum(b.n for b in self.mem.values()), total

    @returns(0)
    def cudaGetLastError(self):
        err = getattr(self.tls, "last_error", RT_OK)
        self.tls.last_error = RT_OK
        return (err,)

    def peek_last_error(self):
        return getattr(self.tls, "last_error", RT_OK)
