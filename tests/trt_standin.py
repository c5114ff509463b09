"""Recording stand-in for the TensorRT/CUDA calls of the runtime's executor (no GPU here), shared by the runtime,
detector and self-check tests. It replaces only what needs a GPU (manifests and files are real) and refuses what
the real API refuses:

- `deserialize` accepts only a real TensorRT-RTX plan (what the tests build with tensorrt_rtx, which cannot
  deserialize without a GPU): the header the runtime reads first — magic `vtrt`, the plan size at byte 16, the
  TensorRT-RTX version at byte 24 — must match, else None, as `deserialize_cuda_engine` returns;
- `set_input_shape` outside the optimization profile, or of a name that is not an input, returns False;
- `set_tensor_address` of a name that is not an I/O tensor, or a null address, returns False;
- `execute_async` without every shape and address set returns False;
- capture needs a stream from `stream_create`; an engine with a non-capturable operation (`fail_capture`) fails
  the capture (the enqueue returns False, `end_capture` raises cudaErrorStreamCaptureInvalidated) and leaves the
  CUDA error set, so a later enqueue fails unless `end_capture_on_error` cleared it (as trtexec does);
- a current device per thread (0 unless `set_device` chose another, as cudaSetDevice does): calls from a thread
  whose current device is not the one the engine was opened on fail.

The `flavour` it plays decides the CUDA-graph path (TensorRT: manual capture; TensorRT-RTX: the runtime config's
strategy); its plans are checked with TensorRT-RTX's header either way (no full TensorRT here).
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from smpler_deploy.runtime.trt_plan import Profile, TensorSpec

OUT_SHAPES = {  # per-sample output shapes of an SMPLer engine
    "vertices": (6890, 3), "joints": (14, 3), "smpl_joints": (24, 3), "smpl_joints2d": (24, 2),
    "rotmat": (24, 3, 3), "betas": (10,), "cam": (3,),
}  # fmt: skip
TRT_VERSION = "1.7.1.116"
PLAN_MAGIC = b"vtrt"  # TensorRT-RTX plans (full TensorRT's start with b"ftrt")
HEADER_SIZE = 64  # tensorrt_rtx.Runtime.engine_header_size


def plan_refusal(plan: bytes, version: str = TRT_VERSION) -> str | None:
    """Why TensorRT-RTX's runtime would refuse these bytes as a plan (None: the header is a valid one)."""
    plan = bytes(plan)
    if len(plan) < HEADER_SIZE or plan[:4] != PLAN_MAGIC:
        return "not a TensorRT-RTX plan (magic)"
    if struct.unpack_from("<Q", plan, 16)[0] != len(plan):
        return "plan size in the header differs from the bytes (truncated or padded)"
    if tuple(plan[24:27]) != tuple(int(v) for v in version.split(".")[:3]):
        return f"built by TensorRT-RTX {'.'.join(map(str, plan[24:27]))}, this runtime is {version}"
    return None


_PLANS: dict = {}


def build_plan(model, profiles: dict, sm: int = 89) -> bytes:
    """A real TensorRT-RTX plan of an ONNX model (bytes or ModelProto), built for `sm` without a GPU.
    profiles: input name -> (min, opt, max) shapes."""
    import tensorrt_rtx as trt

    data = model if isinstance(model, bytes) else model.SerializeToString()
    key = (data, repr(sorted(profiles.items())), sm)
    if key not in _PLANS:
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(data), [parser.get_error(i).desc() for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), 0)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        assert plan is not None
        _PLANS[key] = bytes(plan)
    return _PLANS[key]


def smpler_plan(max_batch: int = 4) -> bytes:
    """A real plan of the self-check's tiny SMPLer-shaped graph (SMPLer's input and 7 outputs), batch 1..max."""
    import tempfile
    from pathlib import Path

    import onnx

    from smpler_deploy.gpucheck.tiny_graph import write_tiny_graph

    with tempfile.TemporaryDirectory() as d:
        model = onnx.load(str(write_tiny_graph(Path(d) / "tiny.onnx")))
    return build_plan(model, {"images": ((1, 3, 224, 224), (1, 3, 224, 224), (max_batch, 3, 224, 224))})


class CudaError(RuntimeError):
    pass


class RecordingCudaStandIn:
    """Records every TensorRT/CUDA call the executor makes; hands out fake device addresses (host buffers)."""

    def __init__(self, device_sm=89, fail_capture=False, out_dtype=np.float32, flavour="tensorrt-rtx", io=None,
                 profile=None, out_shape=None, execute=None):
        """io/profile/out_shape/execute describe another engine than SMPLer's: the I/O specs, the input profile,
        the output shape for a set input shape, and what executing writes into the output buffers."""
        self.calls: list[tuple] = []
        self.sm, self.fail_capture, self.flavour = device_sm, fail_capture, flavour
        self.next_ptr = 0x1000
        self.live_device: dict[int, np.ndarray] = {}
        self.live_host: dict[int, np.ndarray] = {}
        self.out_dtype = out_dtype
        self.specs = io or ([TensorSpec("images", True, np.dtype(np.float32), (-1, 3, 224, 224))]
                            + [TensorSpec(n, False, np.dtype(out_dtype), (-1, *s)) for n, s in OUT_SHAPES.items()])
        self.prof = profile or Profile((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224))
        self.out_shape = out_shape or (lambda name, shapes: (shapes["images"][0], *OUT_SHAPES[name]))
        self.execute = execute
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.streams: dict[str, str | None] = {}  # stream -> capture state (None | "active" | "invalidated")
        self.cuda_error: str | None = None  # the thread's last CUDA error (cudaGetLastError clears it)
        self.tls = threading.local()  # per thread: the current device
        self.device = None  # the device the engine was opened on (the current one at the first CUDA call)

    def _rec(self, *call):
        self.calls.append(call)

    def set_device(self, device: int) -> None:
        self.tls.device = device

    def _device(self):
        current = getattr(self.tls, "device", 0)
        if self.device is None:
            self.device = current
        if current != self.device:
            raise CudaError(f"cudaErrorInvalidResourceHandle (this thread's current device is {current}, the engine "
                            f"and its stream are on device {self.device})")

    def names(self):
        return [c[0] for c in self.calls]

    # TensorRT
    def trt_version(self):
        return TRT_VERSION

    def device_sm(self):
        return self.sm

    def register_plugins(self, plugins, what, kernel_dir=None):
        self._rec("register_plugins", tuple(p["name"] for p in plugins), kernel_dir)
        return [p["name"] for p in plugins]

    def deserialize(self, plan, host_code_allowed=False):
        self._rec("deserialize", len(plan))
        self._device()
        return None if plan_refusal(plan) else "engine"

    def create_context(self, engine, runtime_graphs=False):
        self._rec("create_context", runtime_graphs)
        if runtime_graphs and self.flavour != "tensorrt-rtx":
            # full TensorRT 11 has runtime configs but no CUDA-graph strategy (pyCore.cpp)
            raise AttributeError("type object 'tensorrt' has no attribute 'CudaGraphStrategy'")
        return "ctx"

    def io_tensors(self, engine):
        return list(self.specs)

    def profile(self, engine, name):
        return self.prof

    def set_input_shape(self, ctx, name, shape):
        self._rec("set_input_shape", name, tuple(shape))
        spec = next((s for s in self.specs if s.name == name and s.is_input), None)
        p = self.prof
        if spec is None or len(shape) != len(spec.shape) or any(
                d < lo or d > hi for d, lo, hi in zip(shape, p.min, p.max)):
            return False  # TensorRT logs the error and returns False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, ctx, name):
        return tuple(self.out_shape(name, self.shapes))

    def set_tensor_address(self, ctx, name, ptr):
        self._rec("set_tensor_address", name, ptr)
        if name not in {s.name for s in self.specs} or not ptr:
            return False
        self.addresses[name] = ptr
        return True

    def execute_async(self, ctx, stream):
        self._rec("execute_async", stream)
        self._device()
        if self.cuda_error:  # TensorRT checks the CUDA error after its launches: a leftover one fails the enqueue
            return False
        if set(self.shapes) != {s.name for s in self.specs if s.is_input} or \
                set(self.addresses) != {s.name for s in self.specs}:
            return False
        if self.streams.get(stream) == "active" and self.fail_capture:  # a non-capturable operation
            self.streams[stream] = "invalidated"
            self.cuda_error = "cudaErrorStreamCaptureUnsupported"
            return False
        if self.execute is not None and self.streams.get(stream) is None:
            self.execute(self)
        return True

    def release(self, ctx, engine):
        self._rec("release")

    # CUDA
    def stream_create(self):
        self._rec("stream_create")
        self._device()
        name = f"stream{len(self.streams)}"
        self.streams[name] = None
        return name

    def stream_destroy(self, stream):
        self._rec("stream_destroy", stream)
        del self.streams[stream]

    def malloc(self, n):
        self._device()
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + n + 256
        self.live_device[ptr] = np.zeros(n, np.uint8)
        self._rec("malloc", n, ptr)
        return ptr

    def free(self, ptr):
        self._rec("free", ptr)
        del self.live_device[ptr]

    def host_alloc(self, n):
        buf = np.zeros(n, np.uint8)
        self.live_host[buf.ctypes.data] = buf
        self._rec("host_alloc", n)
        return buf.ctypes.data, buf

    def host_free(self, ptr):
        self._rec("host_free")
        del self.live_host[ptr]

    def memcpy_htod(self, dst, src, n, stream):
        self._device()
        self.live_device[dst][:n] = self.live_host[src][:n]
        self._rec("memcpy_htod", dst, n)

    def memcpy_dtoh(self, dst, src, n, stream):
        self._device()
        if self.execute is None:
            self.live_device[src][:n] = 1  # something visible in the outputs
        self.live_host[dst][:n] = self.live_device[src][:n]
        self._rec("memcpy_dtoh", src, n)

    def device_buffer(self, name):
        """The device buffer bound to tensor `name` (for `execute` callbacks)."""
        return self.live_device[self.addresses[name]]

    def synchronize(self, stream):
        self._rec("synchronize")

    def begin_capture(self, stream):
        self._rec("begin_capture")
        if stream not in self.streams or self.streams[stream]:
            raise CudaError("cudaErrorStreamCaptureUnsupported" if stream not in self.streams else "cudaErrorIllegalState")
        self.streams[stream] = "active"

    def end_capture(self, stream):
        self._rec("end_capture")
        state, self.streams[stream] = self.streams.get(stream), None  # capture ends whatever happened
        if state != "active":
            self.cuda_error = "cudaErrorStreamCaptureInvalidated" if state else "cudaErrorIllegalState"
            raise CudaError(self.cuda_error)
        return f"graph{self.names().count('end_capture')}"

    def end_capture_on_error(self, stream):
        self._rec("end_capture_on_error")
        self.streams[stream] = None
        self.cuda_error = None

    def graph_instantiate(self, graph):
        self._rec("graph_instantiate", graph)
        return graph + "_exec"

    def event_create(self):
        self._rec("event_create")
        return f"event{self.names().count('event_create')}"

    def event_record(self, event, stream):
        self._rec("event_record", event)

    def event_elapsed_ms(self, start, end):
        self._rec("event_elapsed_ms", start, end)
        return 1.5

    def event_destroy(self, event):
        self._rec("event_destroy", event)

    def device_memory_used_mb(self):
        return 512.0

    def graph_launch(self, graph_exec, stream):
        self._rec("graph_launch", graph_exec)

    def graph_destroy(self, graph, graph_exec):
        self._rec("graph_destroy", graph)


def standin_engine(directory, flavour: str = "tensorrt"):
    """`smpler_FLAVOUR.engine` in `directory`: a real plan (`smpler_plan`, batch 1..4) with a complete manifest,
    for sessions over this stand-in."""
    import hashlib
    from pathlib import Path

    import pytest

    from smpler_deploy.trt.manifest import SCHEMA, write_manifest

    pytest.importorskip("tensorrt_rtx")
    path = Path(directory) / f"smpler_{flavour}.engine"
    path.write_bytes(smpler_plan())
    manifest = {
        "schema": SCHEMA,
        "engine": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                   "size": path.stat().st_size},
        "source": {"onnx": "smpler.onnx", "sha256": "0" * 64, "external_data": {}},
        "variant": "smpler", "precision": "fp16",
        "trt": {"flavour": flavour, "version": TRT_VERSION},
        "target": {"sms": [89], "hardware_compatibility_level": "none"},
        "profiles": [{"images": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [4, 3, 224, 224]}}],
        "inputs": [{"name": "images", "shape": [-1, 3, 224, 224], "dtype": "float32"}],
        "outputs": [{"name": n, "shape": [-1, *s], "dtype": "float32"} for n, s in OUT_SHAPES.items()],
        "plugins": [], "build": {"seconds": 1.0, "options": {"version_compatible": False}}, "layers": {},
    }  # fmt: skip
    write_manifest(path, manifest)
    return path


def write_kernel_index(kernel_dir, sms=(89,)):
    """A kernel directory's index.json as smpler-aot writes it (binaries are not read at session open)."""
    import json
    from pathlib import Path

    from smpler_deploy.plugins import abi
    from smpler_deploy.plugins.kernel_store import INDEX_FORMAT

    kernel_dir = Path(kernel_dir)
    kernel_dir.mkdir(parents=True, exist_ok=True)
    entries = [{"kernel": k, "dtype": d, "sm": sm, "cubin": f"{k}_{d}_sm{sm}.cubin"}
               for k in abi.KERNEL_NAMES for d in abi.DTYPES for sm in sms]
    (kernel_dir / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "triton_version": abi.TRITON_VERSION_PIN,
                                                       "kernel_abi": abi.KERNEL_ABI, "kernels": entries}))
    return kernel_dir
