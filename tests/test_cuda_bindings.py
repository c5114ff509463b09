"""trt/cuda_mem.py and trt/launch.py run for real over the `cuda.bindings` stand-in (tests/cuda_bindings_standin.py),
whose functions are first checked against the installed cuda-bindings: names, parameter names, returned values."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import threading

import numpy as np
import pytest

pytest.importorskip("cuda.bindings")

from cuda.bindings import driver as real_driver  # noqa: E402
from cuda.bindings import runtime as real_runtime  # noqa: E402
from cuda_bindings_standin import FakeGpu  # noqa: E402

from smpler_deploy.errors import SmplerError  # noqa: E402
from smpler_deploy.plugins import abi  # noqa: E402
from smpler_deploy.trt import cuda_mem  # noqa: E402
from smpler_deploy.trt import launch as L  # noqa: E402


def _documented_returns(fn) -> int:
    """How many values after the status the real binding returns, from its docstring's Returns section."""
    doc = fn.__doc__
    lines = doc[doc.index("Returns\n-------"):].split("\n")[2:]
    out = []
    for line in lines:
        if not line.strip() or line.startswith(("See Also", "Notes")):
            break
        if not line.startswith(" "):
            out.append(line)
    return len(out) - 1


@pytest.mark.parametrize("which", ["driver", "runtime"])
def test_standin_functions_match_the_installed_bindings(which):
    real = {"driver": real_driver, "runtime": real_runtime}[which]
    fake = getattr(FakeGpu(), which)
    assert len(fake.__standin_functions__) >= 12
    for name in fake.__standin_functions__:
        ours, theirs = getattr(fake, name), getattr(real, name)  # AttributeError: no such function in cuda-bindings
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
        assert ours.n_values == _documented_returns(theirs), name
    # what our code reads from the module: every function it calls exists in the stand-in
    import smpler_deploy.trt.cuda_mem as cm_src
    import smpler_deploy.trt.launch as l_src

    src = inspect.getsource({"driver": l_src, "runtime": cm_src}[which])
    used = set(re.findall(r"\.((?:cu|cuda)[A-Z]\w+)\(", src))
    assert used <= set(fake.__standin_functions__), used - set(fake.__standin_functions__)


@pytest.fixture
def gpu(monkeypatch):
    g = FakeGpu(sm=89, driver_version=12080)
    monkeypatch.setattr(cuda_mem, "_rt", g.runtime)
    monkeypatch.setattr(L, "_functions", {})
    monkeypatch.setattr(L, "_sm", {})
    monkeypatch.setattr(L, "_driver_version", [])
    return g


def test_cuda_mem_buffers_copies_and_errors(gpu):
    assert cuda_mem.device_sm() == 89
    stream = cuda_mem.stream_create()
    x = np.arange(64, dtype=np.float32)
    dev = cuda_mem.malloc(x.nbytes)
    ptr, view = cuda_mem.host_alloc(x.nbytes)
    view[:] = x.view(np.uint8)
    cuda_mem.memcpy_htod(dev, ptr, x.nbytes, stream)
    out = np.zeros_like(x)
    cuda_mem.memcpy_dtoh(out.ctypes.data, dev, x.nbytes, stream)  # (the stand-in's host memory is any address)
    np.testing.assert_array_equal(out, x)
    with pytest.raises(cuda_mem.CudaError, match="cudaErrorInvalidValue"):
        cuda_mem.free(0xDEAD)
    cuda_mem.free(dev)
    cuda_mem.host_free(ptr)
    cuda_mem.stream_destroy(stream)
    assert not gpu.mem and not gpu.streams


def test_failed_capture_leaves_capture_mode_and_clears_the_error(gpu):
    """A synchronizing call under capture invalidates it; end_capture raises, and end_capture_on_error (trtexec's
    endCaptureOnError) leaves the stream usable with no CUDA error pending."""
    stream = cuda_mem.stream_create()
    cuda_mem.begin_capture(stream)
    with pytest.raises(cuda_mem.CudaError, match="cudaErrorStreamCaptureUnsupported"):
        cuda_mem.synchronize(stream)
    cuda_mem.end_capture_on_error(stream)
    assert int(gpu.peek_last_error()) == 0
    assert gpu.runtime.cudaStreamIsCapturing(stream)[1] == real_runtime.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
    cuda_mem.synchronize(stream)  # plain work goes on
    # a capture that succeeded and then had to be abandoned: its graph is dropped
    cuda_mem.begin_capture(stream)
    cuda_mem.end_capture_on_error(stream)
    assert not gpu.graphs
    # a capture invalidated and already ended by end_capture: only the error is left to clear
    cuda_mem.begin_capture(stream)
    with pytest.raises(cuda_mem.CudaError):
        cuda_mem.malloc(16)
    with pytest.raises(cuda_mem.CudaError, match="cudaErrorStreamCaptureInvalidated"):
        cuda_mem.end_capture(stream)
    cuda_mem.end_capture_on_error(stream)
    assert int(gpu.peek_last_error()) == 0


def test_session_over_real_cuda_mem(gpu, tmp_path):
    """TensorRTSession with the TensorRT calls from the recording stand-in and every CUDA call through the real
    cuda_mem over the bindings stand-in: buffers, pinned copies, capture, replay, and nothing left on close."""
    from test_trt_runtime import _engine, images
    from trt_standin import RecordingCudaStandIn

    from smpler_deploy.runtime.tensorrt import TensorRTSession, TrtCudaApi

    trt = RecordingCudaStandIn(flavour="tensorrt")

    class Api(TrtCudaApi):
        def __init__(self):
            self.cuda, self.flavour, self.runtime_config = cuda_mem, "tensorrt", None

    for name in ("trt_version", "device_sm", "register_plugins", "deserialize", "create_context", "io_tensors",
                 "profile", "set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async", "release"):
        setattr(Api, name, lambda self, *a, _n=name, **k: getattr(trt, _n)(*a, **k))
    s = TensorRTSession(_engine(tmp_path, "tensorrt"), api=Api(), warmup=1)
    for _ in range(3):
        out = s.infer(images(2))  # run, capture + launch, replay
    assert s.cuda_graphs.captured == 1 and len(gpu.execs) == 1 and out.vertices.shape == (2, 6890, 3)
    assert s.last_device_ms == 0.0  # events recorded around the enqueue (the stand-in launches no kernel)
    s.close()
    assert not gpu.mem and not gpu.streams and not gpu.graphs and not gpu.execs and not gpu.events


# --- launch: the AOT kernels through the driver API ---------------------------------------------------------------

def write_kernels(kdir, sm=89, shared=None, ptx_version="8.0", ptxas="12.9"):
    """A kernel directory as smpler-aot lays it out, with small images the driver stand-in loads: an ELF cubin
    naming its SM and entry, and PTX text with the entry's parameter list."""
    kdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for kernel in abi.KERNEL_NAMES:
        for dtype in abi.DTYPES:
            spec = abi.variant_spec(kernel, dtype)
            args = [{"name": n, "type": t} for n, t in spec["args"]] + [{"name": h, "type": "*i8"} for h in abi.HIDDEN_ARGS]
            name, stem = f"{kernel}_kernel", f"{kernel}_{dtype}_sm{sm}"
            elf_abi = 8 if ptxas.startswith("13") else 7
            cubin = b"\x7fELF\x02\x01\x01\x41" + bytes([elf_abi]) + f" sm_{sm} {name}".encode()
            params = ",\n".join(f"  .param .{'u64' if a['type'].startswith('*') else 'u32'} {name}_param_{i}"
                                for i, a in enumerate(args))
            ptx = (f".version {ptx_version}\n.target sm_{sm}\n.address_size 64\n\n"
                   f".visible .entry {name}(\n{params}\n)\n{{\n ret;\n}}\n")
            (kdir / f"{stem}.cubin").write_bytes(cubin)
            (kdir / f"{stem}.ptx").write_text(ptx)
            entries.append({"kernel": kernel, "dtype": dtype, "sm": sm, "entry_name": name, "cubin": f"{stem}.cubin",
                            "cubin_sha256": hashlib.sha256(cubin).hexdigest(), "ptx": f"{stem}.ptx",
                            "ptx_sha256": hashlib.sha256(ptx.encode()).hexdigest(), "num_warps": 4,
                            "threads_per_block": 128,
                            "shared": shared if shared is not None else (57472 if kernel == "global_attention" else 2048),
                            "num_ctas": 1, "ptx_version": ptx_version, "ptx_min_driver": None, "ptxas_cuda": ptxas,
                            "grid": spec["grid"], "args": args, "constexprs": spec["constexprs"]})
    from smpler_deploy.plugins.kernel_store import INDEX_FORMAT

    (kdir / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "triton_version": abi.TRITON_VERSION_PIN,
                                                 "kernel_abi": abi.KERNEL_ABI, "kernels": entries}))
    return kdir


LOCAL_SHAPES = [(1, 56, 56, 128), (1, 24, 2), (1, 24, 4, 128), (4, 9, 9)]


def _in_thread(fn):
    """Run fn on a fresh thread (no CUDA context current there), returning its result or raising its error."""
    box = {}

    def body():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_launch_retains_the_primary_context_when_none_is_current(gpu, tmp_path):
    """A thread where only the driver API runs (the AOT self-check step run alone, or torch before its first
    allocation) has no current context: resolve_function retains the primary one and makes it current, then the
    launch goes to that context with the index's block, shared memory (over 48 KiB: opted in) and grid."""
    kdir = write_kernels(tmp_path / "k")
    cu = gpu.driver

    def work():
        fn = L.resolve_function(cu, "global_attention", "fp32", kdir)
        ctx = int(cu.cuCtxGetCurrent()[1])
        local = L.resolve_function(cu, "local_attention", "fp32", kdir)
        launched = L.PreparedLaunch(cu, local, LOCAL_SHAPES, "check local")([256 * (i + 1) for i in range(5)], 0)
        return fn, ctx, launched

    fn, ctx, launched = _in_thread(work)
    assert ctx == gpu.primary[0] and fn.context == ctx and fn.image == "cubin" and fn.sm == 89 and launched
    (rec,) = gpu.launches
    assert rec["function"] == "local_attention_kernel" and rec["grid"] == (24, 1, 1) and rec["block"] == (128, 1, 1)
    # global attention's 57,472 B were opted in (cuFuncSetAttribute) before any launch could need them
    g = next(f for f in gpu.functions.values() if f["name"] == "global_attention_kernel")
    assert g["max_dynamic_shared"] == 57472


def test_launch_refuses_shared_memory_over_the_device_optin(gpu, tmp_path):
    gpu.optin = 48 * 1024  # e.g. a GPU whose opt-in limit is below the variant's need
    kdir = write_kernels(tmp_path / "k")
    with pytest.raises(SmplerError, match=r"global_attention \(fp32\) sm_89: needs 57472 B of shared memory per "
                                          r"block, this GPU allows 49152 B \(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_"
                                          r"PER_BLOCK_OPTIN\); rerun `smpler-aot --sm 89"):
        _in_thread(lambda: L.resolve_function(gpu.driver, "global_attention", "fp32", kdir))


def test_sm90_on_a_cuda12_driver_loads_the_ptx_and_names_the_floor(gpu, tmp_path):
    """H100/H200 fleets on R535 (CUDA 12.2): the CUDA 13 cubin does not load, the PTX at ISA 8.0 does; PTX at 8.5
    (the old floor) would not, and the error says what each image needs."""
    gpu.sm, gpu.version = 90, 12020
    kdir = write_kernels(tmp_path / "k", sm=90, ptxas="13.4", ptx_version="8.0")
    fn = _in_thread(lambda: L.resolve_function(gpu.driver, "local_attention", "fp16", kdir))
    assert fn.image == "ptx"
    L._functions.clear()
    old = write_kernels(tmp_path / "old", sm=90, ptxas="13.4", ptx_version="8.5")
    idx = json.loads((old / "index.json").read_text())
    for e in idx["kernels"]:
        e["ptx_min_driver"] = 12000  # an index that claims too little: the driver itself refuses the PTX
    (old / "index.json").write_text(json.dumps(idx))
    with pytest.raises(SmplerError, match=r"sm_90: the driver \(CUDA 12\.2\) loaded neither image \(ptx: "
                                          r"CUDA_ERROR_UNSUPPORTED_PTX_VERSION\); the PTX needs a CUDA "
                                          r"12\.0\+ driver \(PTX ISA 8\.5\), the cubin a CUDA 13\.4 one"):
        _in_thread(lambda: L.resolve_function(gpu.driver, "local_attention", "fp16", old))


@pytest.mark.slow  # ~10 s: the step's PyTorch references at SMPLer's sizes
def test_aot_step_runs_its_driver_path_over_the_standin(gpu, tmp_path, monkeypatch):
    """smpler-check-gpu's AOT step with cuda-python memory (torch without CUDA), on a thread where no context is
    current: it takes the primary context, resolves every variant, launches through PreparedLaunch, times with
    events and frees everything. The stand-in runs no kernel, so the step's comparison fails, as a number."""
    from smpler_deploy.gpucheck import steps
    from smpler_deploy.gpucheck.core import CheckContext

    kdir = write_kernels(tmp_path / "k")
    monkeypatch.setattr(L, "cuda_driver", lambda: gpu.driver)
    ctx = CheckContext(device="cuda", torch_reason="a CPU build of torch", kernel_dir=kdir, iters=1)
    r = _in_thread(lambda: steps.step_aot(ctx))
    assert r.status == "failed" and "local fp32 max abs error" in r.reason, r.reason
    n = r.numbers
    assert n["sm"] == 89 and n["driver"] == 12080 and n["device_memory"] == "cuda-python"
    assert n["local fp32"]["image"] == n["global fp16"]["image"] == "cubin"
    assert {x["function"] for x in gpu.launches} == {"local_attention_kernel", "global_attention_kernel"}
    assert not gpu.mem and not gpu.streams and not gpu.events
