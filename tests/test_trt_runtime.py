"""TensorRTSession call sequence, buffer reuse and CUDA-graph re-capture, through a recording stand-in.

Nothing here can execute an engine (no GPU), so `RecordingCudaStandIn` replaces the TensorRT/CUDA calls and
records them; it is the only stand-in in this project. The manifest and files are real.
"""

import hashlib
import json

import numpy as np
import pytest

from smpler_deploy.engine.manifest import SCHEMA, write_manifest
from smpler_deploy.errors import SmplerError
from smpler_deploy.outputs import OUTPUT_NAMES, SMPLOutput
from smpler_deploy.runtime.base import Session
from smpler_deploy.runtime.tensorrt import TensorRTSession
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

    def register_plugins(self, plugins, what):
        self._rec("register_plugins", tuple(p["name"] for p in plugins))
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


@pytest.fixture
def engine(tmp_path):
    """An engine file with a complete manifest (bytes are opaque to the stand-in)."""
    path = tmp_path / "smpler.engine"
    path.write_bytes(b"not-a-real-plan" * 100)
    manifest = {
        "schema": SCHEMA,
        "engine": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": 1500},
        "source": {"onnx": "smpler.onnx", "sha256": "0" * 64, "external_data": {}},
        "variant": "smpler", "precision": "fp16",
        "trt": {"flavour": "tensorrt-rtx", "version": TRT_VERSION},
        "target": {"sms": [89], "hardware_compatibility_level": "none"},
        "profiles": [{"images": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [4, 3, 224, 224]}}],
        "inputs": [{"name": "images", "shape": [-1, 3, 224, 224], "dtype": "float32"}],
        "outputs": [{"name": n, "shape": [-1, *s], "dtype": "float32"} for n, s in OUT_SHAPES.items()],
        "plugins": [], "build": {"seconds": 1.0, "options": {"version_compatible": False}}, "layers": {},
    }  # fmt: skip
    write_manifest(path, manifest)
    return path


def images(b):
    return np.random.default_rng(b).standard_normal((b, 3, 224, 224)).astype(np.float32)


def test_session_protocol_and_call_order(engine):
    api = RecordingCudaStandIn()
    s = TensorRTSession(engine, api=api)
    assert isinstance(s, Session) and s.backend == "tensorrt" and s.precision == "fp16"
    assert api.names()[:3] == ["deserialize", "create_context", "stream_create"] and api.names().count("event_create") == 2
    api.calls.clear()
    out = s.infer(images(2))
    assert isinstance(out, SMPLOutput)
    for n in OUTPUT_NAMES:
        arr = getattr(out, n)
        assert arr.dtype == np.float32 and arr.shape == (2, *OUT_SHAPES[n])
    names = api.names()
    # shape first, then buffers bound by name, input copied, enqueue, outputs copied, one sync at the end
    assert names[0] == "set_input_shape"
    assert names.index("set_tensor_address") < names.index("memcpy_htod") < names.index("execute_async")
    assert names.index("execute_async") < names.index("memcpy_dtoh") and names[-2:] == ["synchronize", "event_elapsed_ms"]
    # device time brackets exactly the engine launch (trtexec's GPU compute), not the copies
    rec = [i for i, n in enumerate(names) if n == "event_record"]
    assert names.index("memcpy_htod") < rec[0] < names.index("execute_async") < rec[1] < names.index("memcpy_dtoh")
    assert s.last_device_ms == 1.5 and s.device_memory_mb == 512.0
    bound = {c[1] for c in api.calls if c[0] == "set_tensor_address"}
    assert bound == {"images", *OUTPUT_NAMES}
    s.close()
    assert not api.live_device and not api.live_host and api.names()[-1] == "release"
    assert api.names().count("event_destroy") == 2
    s.close()  # idempotent


def test_buffers_reused_and_grown(engine):
    api = RecordingCudaStandIn()
    s = TensorRTSession(engine, api=api, cuda_graphs=False)
    s.infer(images(2))
    mallocs = api.names().count("malloc")
    assert mallocs == 1 + len(OUTPUT_NAMES)
    s.infer(images(2))
    s.infer(images(1))  # smaller batch fits in the existing buffers
    assert api.names().count("malloc") == mallocs and api.names().count("set_tensor_address") == mallocs
    assert api.names().count("set_input_shape") == 2  # 2 -> 2 is not re-set; 2 -> 1 is
    api.calls.clear()
    s.infer(images(4))  # larger: every buffer grows (old one freed first), addresses re-bound
    assert api.names().count("free") == mallocs and api.names().count("malloc") == mallocs
    assert api.names().count("set_tensor_address") == mallocs
    htod = [c for c in api.calls if c[0] == "memcpy_htod"]
    assert htod[0][2] == 4 * 3 * 224 * 224 * 4  # copies only the bytes of this batch
    s.close()


def test_graph_captured_after_warmup_replayed_and_recaptured(engine):
    api = RecordingCudaStandIn()
    s = TensorRTSession(engine, api=api, warmup=2)
    for _ in range(2):
        s.infer(images(1))
    assert "begin_capture" not in api.names() and api.names().count("execute_async") == 2
    s.infer(images(1))  # third call, same shape: capture, then launch
    names = api.names()
    assert names.count("begin_capture") == 1
    i = names.index("begin_capture")
    assert names[i : i + 5] == ["begin_capture", "execute_async", "end_capture", "graph_instantiate", "graph_launch"]
    api.calls.clear()
    s.infer(images(1))  # replay: no enqueue at all
    assert "execute_async" not in api.names() and api.names().count("graph_launch") == 1
    api.calls.clear()
    s.infer(images(2))  # shape changed: stale graph destroyed, warm-up restarts
    names = api.names()
    assert names.index("graph_destroy") < names.index("execute_async")
    assert "graph_launch" not in names and names.count("execute_async") == 1
    s.infer(images(2))
    s.infer(images(2))
    assert api.names().count("begin_capture") == 1  # recaptured for the new shape
    api.calls.clear()
    s.infer(images(4))  # bigger batch: new shape and new addresses -> not replayed
    assert "graph_launch" not in api.names()
    s.close()
    assert "graph_destroy" in api.names()


def test_address_change_invalidates_graph(engine):
    api = RecordingCudaStandIn()
    s = TensorRTSession(engine, api=api, warmup=1)
    s.infer(images(1))
    s.infer(images(1))  # captured for batch 1 with the first buffers
    assert api.names().count("graph_launch") == 1
    # same shape but reallocated buffers (simulate an external re-bind): key differs -> no replay
    s.dev["images"] = (s.dev["images"][0] + 1, s.dev["images"][1])
    api.calls.clear()
    s.infer(images(1))
    assert "graph_launch" not in api.names() and "graph_destroy" in api.names()


def test_capture_failure_disables_graphs(engine):
    api = RecordingCudaStandIn(fail_capture=True)
    s = TensorRTSession(engine, api=api, warmup=1)
    s.infer(images(1))
    out = s.infer(images(1))  # capture fails -> same call still runs plainly
    assert out.vertices.shape == (1, 6890, 3)
    assert s.policy.disabled_reason and "CaptureUnsupported" in s.policy.disabled_reason
    api.calls.clear()
    for _ in range(3):
        s.infer(images(1))
    assert "begin_capture" not in api.names() and api.names().count("execute_async") == 3


def test_out_of_profile_batch(engine):
    s = TensorRTSession(engine, api=RecordingCudaStandIn())
    with pytest.raises(SmplerError, match=r"outside the engine's profile \(batch min 1, opt 1, max 4\)"):
        s.infer(images(5))
    with pytest.raises(SmplerError, match=r"\[B,3,224,224\]"):
        s.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_manifest_checked_before_deserialize(engine, tmp_path):
    api = RecordingCudaStandIn(device_sm=86)
    with pytest.raises(SmplerError, match=r"built for SM89, this GPU is SM86; rebuild with --sm 86"):
        TensorRTSession(engine, api=api)
    assert "deserialize" not in api.names()
    engine.write_bytes(engine.read_bytes()[:100])  # truncated copy
    with pytest.raises(SmplerError, match="sha256 differs"):
        TensorRTSession(engine, api=RecordingCudaStandIn())
    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(SmplerError, match="no manifest x.engine.json"):
        TensorRTSession(tmp_path / "x.engine", api=RecordingCudaStandIn())


def test_corrupt_engine_and_plugins(engine):
    with pytest.raises(SmplerError, match="could not deserialize the engine"):
        TensorRTSession(engine, api=RecordingCudaStandIn(corrupt=True))
    m = json.loads((engine.parent / (engine.name + ".json")).read_text())
    m["plugins"] = [{"name": "SmplerGlobalAttention", "namespace": "smpler", "version": "1", "count": 3}]
    write_manifest(engine, m)
    api = RecordingCudaStandIn()
    TensorRTSession(engine, api=api).close()
    assert api.names()[0] == "register_plugins"  # before deserialize


def test_real_api_without_cuda_python(engine, tmp_path):
    """With the real api the first device query needs cuda-python, which this machine lacks: one line."""
    pytest.importorskip("tensorrt_rtx")
    try:
        import cuda.bindings  # noqa: F401

        pytest.skip("cuda-python is installed")
    except ImportError:
        pass
    with pytest.raises(SmplerError, match="needs cuda-python"):
        TensorRTSession(engine)
