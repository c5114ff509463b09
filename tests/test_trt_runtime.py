"""TensorRTSession call sequence, buffer reuse and CUDA-graph re-capture, through a recording stand-in.

Nothing here can execute an engine (no GPU), so `RecordingCudaStandIn` replaces the TensorRT/CUDA calls, records
them and refuses what TensorRT refuses (a plan that is not one, shapes outside the profile, a broken capture). The
engine files are real TensorRT-RTX plans of a tiny SMPLer-shaped graph, with their manifests.
"""

import hashlib
import json

import numpy as np
import pytest

from trt_standin import OUT_SHAPES, RecordingCudaStandIn, smpler_plan, standin_engine, write_kernel_index

from smpler_deploy.errors import SmplerError
from smpler_deploy.outputs import OUTPUT_NAMES, SMPLOutput
from smpler_deploy.precision import Precision
from smpler_deploy.runtime.base import Session
from smpler_deploy.runtime.tensorrt import TensorRTSession
from smpler_deploy.trt.manifest import write_manifest

_engine = standin_engine  # the name test_cuda_bindings imports from here; the fixtures are in conftest.py


def images(b):
    return np.random.default_rng(b).standard_normal((b, 3, 224, 224)).astype(np.float32)


def test_session_protocol_and_call_order(engine):
    api = RecordingCudaStandIn()
    s = TensorRTSession(engine, api=api)
    assert isinstance(s, Session) and s.backend == "tensorrt" and s.precision == Precision("fp16")
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
    size = s.executor.dev["images"][1]
    s.executor.dev["images"] = (api.malloc(size), size)
    api.calls.clear()
    s.infer(images(1))
    assert "graph_launch" not in api.names() and "graph_destroy" in api.names()


def test_capture_failure_disables_graphs(engine):
    api = RecordingCudaStandIn(fail_capture=True)
    s = TensorRTSession(engine, api=api, warmup=1)
    s.infer(images(1))
    out = s.infer(images(1))  # capture fails -> same call still runs plainly
    assert out.vertices.shape == (1, 6890, 3)
    assert s.cuda_graphs.disabled_reason == "RuntimeError: execute_async_v3 returned False under capture"
    # trtexec's endCaptureOnError before the plain enqueue: capture left, the CUDA error cleared (a leftover error
    # would fail that enqueue and every later one)
    names = api.names()
    i = names.index("begin_capture")
    assert names[i:i + 4] == ["begin_capture", "execute_async", "end_capture_on_error", "execute_async"]
    assert api.cuda_error is None and api.streams[s.executor.stream] is None
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


def test_manifest_checked_before_deserialize(rtx_engine, tmp_path):
    engine = rtx_engine
    api = RecordingCudaStandIn(device_sm=86)
    with pytest.raises(SmplerError, match=r"built for SM89, this GPU is SM86; rebuild with `sms` 86"):
        TensorRTSession(engine, api=api)
    assert "deserialize" not in api.names()
    engine.write_bytes(engine.read_bytes()[:100])  # truncated copy
    with pytest.raises(SmplerError, match="sha256 differs"):
        TensorRTSession(engine, api=RecordingCudaStandIn())
    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(SmplerError, match="no manifest x.engine.json"):
        TensorRTSession(tmp_path / "x.engine", api=RecordingCudaStandIn())


def _with_plugins(engine):
    m = json.loads((engine.parent / (engine.name + ".json")).read_text())
    m["plugins"] = [{"name": "SmplerGlobalAttention", "namespace": "smpler", "version": "1", "count": 3}]
    write_manifest(engine, m)


def _rewrite(engine, data: bytes):
    """Replace the engine bytes, with a manifest that matches them (so the plan itself is what is judged)."""
    m = json.loads((engine.parent / (engine.name + ".json")).read_text())
    engine.write_bytes(data)
    m["engine"] |= {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    write_manifest(engine, m)


def test_corrupt_engine_and_plugins(engine, tmp_path):
    plan = engine.read_bytes()
    for bad in (plan[: len(plan) // 2], b"not-a-real-plan" * 100, b"\0" * 4 + plan):
        _rewrite(engine, bad)
        with pytest.raises(SmplerError, match="could not deserialize the engine"):
            TensorRTSession(engine, api=RecordingCudaStandIn())
    _rewrite(engine, plan)
    _with_plugins(engine)
    kdir = write_kernel_index(tmp_path / "kernels", sms=(89,))
    api = RecordingCudaStandIn()
    TensorRTSession(engine, api=api, kernel_dir=kdir).close()
    assert api.calls[0] == ("register_plugins", ("SmplerGlobalAttention",), kdir)  # before deserialize


def test_plugin_kernels_checked_at_open(engine, tmp_path, monkeypatch):
    """No kernel for this GPU's SM: refused when the session opens (not at the first execute), naming the SM
    and the command that builds it; it looks in the directory it is handed (the commands hand it --kernel-dir, else
    $SMPLER_KERNEL_DIR), never in the environment itself."""
    _with_plugins(engine)
    kdir = write_kernel_index(tmp_path / "kernels", sms=(86,))
    api = RecordingCudaStandIn(device_sm=89)
    m = json.loads((engine.parent / (engine.name + ".json")).read_text())
    m["target"] = {"sms": [], "hardware_compatibility_level": "none"}  # a --trt tensorrt engine: local GPU
    write_manifest(engine, m)
    with pytest.raises(SmplerError) as e:
        TensorRTSession(engine, api=api, kernel_dir=kdir)
    assert str(e.value) == (f"{engine}: no global_attention kernel for this GPU (SM89) in {kdir}; "
                            f"build it with `smpler-aot --sm 89 -o {kdir}` (or pass `kernel_dir` DIR)")
    assert api.calls == []  # nothing registered, deserialized or allocated
    good = write_kernel_index(tmp_path / "good", sms=(89,))
    monkeypatch.setenv("SMPLER_KERNEL_DIR", str(kdir))  # the commands' default, not read by the session
    TensorRTSession(engine, api=api, kernel_dir=good).close()
    assert api.calls[0][2] == good


def test_session_open_imports_no_torch_or_triton(engine, tmp_path):
    """The TensorRT side in a process where torch and triton cannot be imported: the kernel directory
    resolves, and a whole session opens with real TensorRT-RTX and our real plugin registration (only the
    GPU calls come from the recording stand-in), then runs a batch."""
    pytest.importorskip("tensorrt_rtx")
    import subprocess
    import sys
    from pathlib import Path

    import tensorrt_rtx

    _with_plugins(engine)
    m = json.loads((engine.parent / (engine.name + ".json")).read_text())
    m["trt"] |= {"version": tensorrt_rtx.__version__, "flavour": "tensorrt-rtx"}
    write_manifest(engine, m)
    kdir = write_kernel_index(tmp_path / "kernels", sms=(89,))
    code = f"""
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "triton"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocked())
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy as np
from trt_standin import RecordingCudaStandIn
from smpler_deploy.runtime.tensorrt import TensorRTSession, TrtCudaApi
from smpler_deploy.trt import plugins

assert plugins.kernels_needed(["SmplerLocalAttention"]) == ["local_attention"]

class HostOnlyApi(TrtCudaApi):  # real tensorrt_rtx import and plugin registration; GPU calls recorded
    def __init__(self):
        super().__init__("tensorrt-rtx")
        self.gpu = RecordingCudaStandIn()
    def __getattribute__(self, name):
        if name in ("trt_version", "register_plugins", "trt", "flavour", "gpu") or name.startswith("__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "gpu"), name)

api = HostOnlyApi()
s = TensorRTSession({str(engine)!r}, api=api, kernel_dir={str(kdir)!r})
out = s.infer(np.zeros((1, 3, 224, 224), np.float32))
s.close()
reg = api.trt.get_plugin_registry()
assert reg.get_creator("SmplerGlobalAttention", "1", "smpler") is not None
print(out.vertices.shape, "torch" in sys.modules, "triton" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["(1,", "6890,", "3)", "False", "False"]


def test_real_api_on_a_machine_without_gpu(rtx_engine):
    """The real api on this GPU-less machine: one line, whether cuda-python is missing or finds no driver."""
    pytest.importorskip("tensorrt_rtx")
    with pytest.raises(SmplerError, match=r"needs cuda-python|found no usable CUDA device \(cudaError\w+\): "):
        TensorRTSession(rtx_engine)


def test_tensorrt_rtx_uses_the_runtime_cuda_graph_strategy(rtx_engine, engine):
    """TensorRT-RTX engines get the runtime config's whole-graph capture and no manual stream capture (it
    JIT-specialises kernels at run time; stream capture needs REQUIRE_USER_ALLOCATION engines); full TensorRT
    keeps trtexec-style capture after the warm-up."""
    api = RecordingCudaStandIn()
    s = TensorRTSession(rtx_engine, api=api, warmup=1)
    for _ in range(4):
        s.infer(images(1))
    assert ("create_context", True) in api.calls
    assert "begin_capture" not in api.names() and api.names().count("execute_async") == 4
    s.close()
    api = RecordingCudaStandIn()
    TensorRTSession(rtx_engine, api=api, cuda_graphs=False).close()
    assert ("create_context", False) in api.calls
    api = RecordingCudaStandIn(flavour="tensorrt")
    s = TensorRTSession(engine, api=api, warmup=1)
    for _ in range(3):
        s.infer(images(1))
    assert ("create_context", False) in api.calls and api.names().count("begin_capture") == 1
    s.close()


def test_standin_refuses_what_tensorrt_refuses():
    """The stand-in's own strictness (what the session tests rely on)."""
    pytest.importorskip("tensorrt_rtx")
    from trt_standin import plan_refusal

    plan = smpler_plan()
    assert plan_refusal(plan) is None
    assert plan_refusal(plan[:-1]) and plan_refusal(b"ftrt" + plan[4:]) and plan_refusal(plan, "1.8.0")
    api = RecordingCudaStandIn()
    assert api.deserialize(plan) == "engine" and api.deserialize(plan + b"\0") is None
    assert not api.set_input_shape("ctx", "images", (5, 3, 224, 224))  # batch 5 > profile max 4
    assert not api.set_input_shape("ctx", "vertices", (1, 6890, 3))  # not an input
    assert not api.set_tensor_address("ctx", "nope", 0x1000) and not api.set_tensor_address("ctx", "images", 0)
    assert not api.execute_async("ctx", "stream0")  # nothing set
    with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureUnsupported"):
        api.begin_capture("legacy-default-stream")
    import threading

    def on_new_thread(api):
        box = []
        t = threading.Thread(target=lambda: box.append(api.stream_create()))
        t.start()
        t.join()
        return box

    assert on_new_thread(api)  # device 0 is current on any new thread, as with the CUDA runtime
    on_one = RecordingCudaStandIn()
    on_one.set_device(1)
    on_one.stream_create()  # the engine's stream on device 1
    with pytest.raises(RuntimeError, match="current device is 0, the engine and its stream are on device 1"):
        _raise_on_new_thread(on_one)


def _raise_on_new_thread(api):
    import threading

    err = []

    def body():
        try:
            api.stream_create()
        except RuntimeError as e:
            err.append(e)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if err:
        raise err[0]


def test_trt_cuda_api_uses_names_the_installed_tensorrt_rtx_has():
    """TrtCudaApi.create_context's TensorRT-RTX path (runtime config, CUDA-graph strategy) spelled as the installed
    bindings spell it (no engine can be deserialized here to call it)."""
    trt = pytest.importorskip("tensorrt_rtx")
    assert trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE.value == 1
    assert trt.IRuntimeConfig.cuda_graph_strategy.fset is not None
    assert hasattr(trt.ICudaEngine, "create_runtime_config")
    assert "runtime_config: tensorrt_rtx_bindings.tensorrt_rtx.IRuntimeConfig" in \
        trt.ICudaEngine.create_execution_context.__doc__
