"""Recording stand-in for the TensorRT/CUDA calls of `TensorRTSession` (no GPU here), shared by the runtime
tests and the torch-free subprocess check. It replaces only what needs a GPU; manifests and files are real."""

import numpy as np

from smpler_deploy.runtime.trt_plan import Profile, TensorSpec

OUT_SHAPES = {  # per-sample output shapes of an SMPLer engine
    "vertices": (6890, 3), "joints": (14, 3), "smpl_joints": (24, 3), "smpl_joints2d": (24, 2),
    "rotmat": (24, 3, 3), "betas": (10,), "cam": (3,),
}  # fmt: skip
TRT_VERSION = "1.7.1.116"


class RecordingCudaStandIn:
    """Records every TensorRT/CUDA call the session makes; hands out fake device addresses."""

    def __init__(self, device_sm=89, corrupt=False, fail_capture=False, out_dtype=np.float32):
        self.calls: list[tuple] = []
        self.sm, self.corrupt, self.fail_capture = device_sm, corrupt, fail_capture
        self.next_ptr = 0x1000
        self.live_device: dict[int, int] = {}
        self.live_host: dict[int, np.ndarray] = {}
        self.out_dtype = out_dtype
        self.batch = None

    def _rec(self, *call):
        self.calls.append(call)

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
        return None if self.corrupt else "engine"

    def create_context(self, engine):
        self._rec("create_context")
        return "ctx"

    def io_tensors(self, engine):
        specs = [TensorSpec("images", True, np.dtype(np.float32), (-1, 3, 224, 224))]
        return specs + [TensorSpec(n, False, np.dtype(self.out_dtype), (-1, *s)) for n, s in OUT_SHAPES.items()]

    def profile(self, engine, name):
        return Profile((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224))

    def set_input_shape(self, ctx, name, shape):
        self._rec("set_input_shape", name, tuple(shape))
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, ctx, name):
        return (self.batch, *OUT_SHAPES[name])

    def set_tensor_address(self, ctx, name, ptr):
        self._rec("set_tensor_address", name, ptr)
        return True

    def execute_async(self, ctx, stream):
        self._rec("execute_async", stream)
        return True

    def release(self, ctx, engine):
        self._rec("release")

    # CUDA
    def stream_create(self):
        self._rec("stream_create")
        return "stream0"

    def stream_destroy(self, stream):
        self._rec("stream_destroy", stream)

    def malloc(self, n):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + n + 256
        self.live_device[ptr] = n
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
        self._rec("memcpy_htod", dst, n)

    def memcpy_dtoh(self, dst, src, n, stream):
        self.live_host[dst][:n] = 1  # something visible in the outputs
        self._rec("memcpy_dtoh", src, n)

    def synchronize(self, stream):
        self._rec("synchronize")

    def begin_capture(self, stream):
        self._rec("begin_capture")

    def end_capture(self, stream):
        self._rec("end_capture")
        if self.fail_capture:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported")
        return f"graph{self.names().count('end_capture')}"

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
