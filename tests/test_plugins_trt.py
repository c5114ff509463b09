"""The attention plugins in real TensorRT-RTX builds for SM89 (no GPU needed), plus the enqueue path on a fake
CUDA driver (what cannot run here: the kernels themselves on a GPU)."""

import ctypes
import hashlib
import json
import logging
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from smpler_deploy.errors import SmplerError
from smpler_deploy.plugins import abi, onnx_nodes
from smpler_deploy.trt import launch as L
from smpler_deploy.trt import plugins as P

try:
    from smpler_deploy.trt.importer import import_trt

    trt, _ = import_trt("tensorrt-rtx")
except SmplerError as e:  # pragma: no cover
    pytest.skip(f"TensorRT-RTX unavailable: {e}", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
C, NH, S, J, Q = 128, 4, 8, 3, 2
KEYS = (64, 16, 4, 1)


class _Attn(torch.nn.Module):
    def forward(self, feat, joints, qk, table, gqk, k0, k1, k2, k3):
        a = onnx_nodes.local_attention_plugin(feat, joints, qk, table, 4)
        b = onnx_nodes.global_attention_multiscale_plugin([k0, k1, k2, k3], gqk)
        return a * 2.0, b + 1.0


def _export(path, dtype, b=2):
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(b, S, S, C, generator=g).to(dtype), torch.rand(b, J, 2, generator=g) * 2 - 1,
            torch.randn(b, J, NH, C, generator=g).to(dtype), torch.randn(NH, 9, 9, generator=g),
            torch.randn(b, 4, Q, NH, C, generator=g).to(dtype), *[torch.randn(b, n, C, generator=g).to(dtype) for n in KEYS])
    names = ["feat", "joints", "qk", "table", "gqk", "k0", "k1", "k2", "k3"]
    dyn = {n: {0: "B"} for n in names if n != "table"} | {"la": {0: "B"}, "ga": {0: "B"}}
    torch.onnx.export(_Attn(), args, str(path), dynamo=False, opset_version=19, input_names=names,
                      output_names=["la", "ga"], dynamic_axes=dyn, custom_opsets=onnx_nodes.CUSTOM_OPSETS)
    return path


@pytest.fixture
def plugin_errors(caplog):
    """The errors the plugins logged (TensorRT reduces a plugin method's exception to "non-zero return code")."""
    caplog.set_level(logging.ERROR, logger=P.log.name)
    return lambda: [r.getMessage() for r in caplog.records if r.name == P.log.name and r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {dt: _export(d / f"attn_{dt}.onnx", getattr(torch, dt)) for dt in ("float32", "float16")}


class _Log(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self)
        self.lines = []

    def log(self, severity, msg):
        self.lines.append(msg)


def _parse(path):
    log = _Log()
    builder = trt.Builder(log)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")  # symbolic: RTX has only this flag
    network = builder.create_network(1 << int(flag))
    parser = trt.OnnxParser(network, log)
    ok = parser.parse_from_file(str(path))
    errors = [" ".join(str(getattr(e, m)()) for m in ("node_name", "node_operator", "desc") if hasattr(e, m))
              for e in (parser.get_error(i) for i in range(parser.num_errors))]
    return log, builder, network, ok, errors


def _build(path):
    log, builder, network, ok, errors = _parse(path)
    assert ok, errors
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        profile.set_shape(t.name, *[[b if d == -1 else d for d in shape] for b in (1, 2, 4)])
    config.add_optimization_profile(profile)
    return log, network, builder.build_serialized_network(network, config)


def _layers_section(lines):
    text = "\n".join(lines)
    assert "Layers:" in text
    return text[text.index("Layers:"):].splitlines()


@pytest.mark.parametrize("dtype,trt_type", [("float32", "Float"), ("float16", "Half")])
def test_build_sm89_custom_layers(onnx_files, dtype, trt_type, plugin_errors):
    assert P.register_plugins(trt) == ["SmplerLocalAttention", "SmplerGlobalAttention"]
    assert P.register_plugins(trt) == ["SmplerLocalAttention", "SmplerGlobalAttention"]  # idempotent
    log, network, plan = _build(onnx_files[dtype])
    assert plan is not None and plan.nbytes > 0, plugin_errors()
    kinds = {network.get_layer(i).name: network.get_layer(i).type for i in range(network.num_layers)}
    assert kinds["/SmplerLocalAttention"] == kinds["/SmplerGlobalAttention"] == trt.LayerType.PLUGIN_V3
    layers = _layers_section(log.lines)
    for op in ("SmplerLocalAttention", "SmplerGlobalAttention"):
        rows = [ln for ln in layers if ln.startswith(f"Name: /{op}")]
        assert len(rows) == 1 and "LayerType: custom_layer" in rows[0], rows  # kept, not replaced or fused away
        assert f"Datatype: {trt_type}" in rows[0] and "[-1," in rows[0]  # strongly typed, dynamic batch
    local = next(ln for ln in layers if ln.startswith("Name: /SmplerLocalAttention"))
    assert "Name: joints, Dimensions: [-1,3,2]" in local and "Datatype: Float, Format" in local  # joints fp32
    assert not plugin_errors()


@pytest.mark.parametrize("radius", [4, 2])
def test_fields_roundtrip(radius):
    P.register_plugins(trt)
    creator = P.get_creator(trt, "SmplerLocalAttention")
    assert [f.name for f in creator.field_names] == ["radius"]
    fc = trt.PluginFieldCollection([trt.PluginField("radius", np.array([radius], np.int32), trt.PluginFieldType.INT32)])
    plugin = creator.create_plugin("layer_a", fc, trt.TensorRTPhase.BUILD)
    ser = plugin.get_fields_to_serialize()
    assert {f.name: int(np.asarray(f.data)[0]) for f in ser} == {"radius": radius, "kernel_abi": P.KERNEL_ABI}
    again = creator.create_plugin("layer_a", ser, trt.TensorRTPhase.RUNTIME)
    assert again.fields == plugin.fields == {"radius": radius, "kernel_abi": P.KERNEL_ABI}
    assert (again.plugin_name, again.plugin_namespace, again.plugin_version) == ("SmplerLocalAttention", "smpler", "1")
    assert again.clone().fields == again.fields and again.attach_to_context(None).fields == again.fields
    g = P.get_creator(trt, "SmplerGlobalAttention")
    gp = g.create_plugin("layer_b", trt.PluginFieldCollection([]), trt.TensorRTPhase.BUILD)
    assert g.create_plugin("layer_b", gp.get_fields_to_serialize(), trt.TensorRTPhase.RUNTIME).fields == {"kernel_abi": 1}


def test_missing_registration_is_a_parse_error(onnx_files):
    registry = trt.get_plugin_registry()
    for op in P.SPECS:
        creator = P.get_creator(trt, op)
        if creator is not None:
            assert registry.deregister_creator(creator)
    try:
        _, _, _, ok, errors = _parse(onnx_files["float32"])
        assert not ok
        assert any("SmplerLocalAttention" in e and "Plugin not found" in e for e in errors), errors
    finally:
        P.register_plugins(trt)
    assert P.get_creator(trt, "SmplerLocalAttention") is not None


def _local_node_model(path, feat_t, qk_t, joints_t=TensorProto.FLOAT, c=C):
    ins = [helper.make_tensor_value_info("feat", feat_t, ["B", S, S, c]),
           helper.make_tensor_value_info("joints", joints_t, ["B", J, 2]),
           helper.make_tensor_value_info("qk", qk_t, ["B", J, NH, c]),
           helper.make_tensor_value_info("table", TensorProto.FLOAT, [NH, 9, 9])]
    node = helper.make_node("SmplerLocalAttention", ["feat", "joints", "qk", "table"], ["out"], name="local_bad",
                            domain="smpler", radius=4, plugin_namespace="smpler", plugin_version="1")
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("out", qk_t, ["B", J, NH, c])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("smpler", 1)]),
              path)
    return path


@pytest.mark.parametrize("feat_t,qk_t,joints_t,bad", [
    (TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.FLOAT, "feat_nhwc=fp16, joints2d=fp32, qk=fp32"),
    (TensorProto.BFLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT, "feat_nhwc=bf16"),
    (TensorProto.FLOAT16, TensorProto.FLOAT16, TensorProto.FLOAT16, "joints2d=fp16"),
])
def test_unsupported_dtype_names_layer(tmp_path, feat_t, qk_t, joints_t, bad, plugin_errors):
    P.register_plugins(trt)
    _, _, _, ok, errors = _parse(_local_node_model(tmp_path / "bad.onnx", feat_t, qk_t, joints_t))
    assert not ok and any("local_bad" in e for e in errors), errors  # the parser names the node
    msgs = plugin_errors()  # and our reason, which TensorRT reduces to "non-zero return code"
    assert len(msgs) == 1 and msgs[0].startswith("local_bad (SmplerLocalAttention): unsupported input types")
    assert bad in msgs[0] and "expected feat_nhwc and qk both fp32 or both fp16" in msgs[0]


def test_unsupported_shape_refused_at_build(tmp_path, plugin_errors):
    P.register_plugins(trt)
    log, _, plan = _build(_local_node_model(tmp_path / "c256.onnx", TensorProto.FLOAT, TensorProto.FLOAT, c=256))
    assert plan is None
    msgs = plugin_errors()
    assert msgs and "local_bad (SmplerLocalAttention): shapes" in msgs[0] and "compiled kernels" in msgs[0]


def test_supports_format_combination_rules():
    plugin_cls, _ = P._make_classes(trt)
    p = plugin_cls("SmplerLocalAttention", "l")
    D = lambda t, f=trt.TensorFormat.LINEAR: types.SimpleNamespace(desc=types.SimpleNamespace(type=t, format=f))  # noqa: E731
    F, H = trt.DataType.FLOAT, trt.DataType.HALF
    io = [D(H), D(F), D(H), D(F), D(H)]
    assert all(p.supports_format_combination(i, io, 4) for i in range(5))
    assert not p.supports_format_combination(1, [D(H), D(H), D(H), D(F), D(H)], 4)  # joints must be fp32
    assert not p.supports_format_combination(2, [D(H), D(F), D(F), D(F), D(H)], 4)  # qk follows feat
    assert not p.supports_format_combination(0, [D(H, trt.TensorFormat.HWC8)] + io[1:], 4)
    assert not p.supports_format_combination(0, [D(trt.DataType.BF16)] + io[1:], 4)


# ------------------------------------------------------------------------------ enqueue on a fake CUDA driver

class _FakeDriver:
    """Recording stand-in for cuda.bindings.driver (no GPU here): every driver call is logged by name, the
    launch's parameters are read back from the void*[] array like the real driver does."""

    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_INVALID_IMAGE = 200
        CUDA_ERROR_INVALID_CONTEXT = 201

    class CUdevice_attribute:
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = "major"
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = "minor"
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = "optin"

    class CUfunction_attribute:
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = "max_dyn_smem"

    def __init__(self, sm, ctx=0xC0, param_types=(), version=13000, cubin_loads=True):
        self.sm, self.ctx, self.param_types, self.version, self.cubin_loads = sm, ctx, param_types, version, cubin_loads
        self.calls = []

    def names(self):
        return [c[0] for c in self.calls]

    def CUstream(self, s):  # a handle constructor, not a driver call
        return ("stream", s)

    def cuCtxGetCurrent(self):
        self.calls.append(("cuCtxGetCurrent",))
        return 0, self.ctx

    def cuCtxGetDevice(self):
        self.calls.append(("cuCtxGetDevice",))
        return 0, 0

    def cuDeviceGetAttribute(self, attr, dev):
        self.calls.append(("cuDeviceGetAttribute", attr))
        return 0, {"major": self.sm // 10, "minor": self.sm % 10, "optin": 99 * 1024}[attr]

    def cuDriverGetVersion(self):
        self.calls.append(("cuDriverGetVersion",))
        return 0, self.version

    def cuModuleLoadData(self, data):
        data = bytes(data)
        self.calls.append(("cuModuleLoadData", data))
        if data.startswith(b"CUBIN") and not self.cubin_loads:  # e.g. an ELF ABI 8 cubin on a CUDA 12 driver
            return self.CUresult.CUDA_ERROR_INVALID_IMAGE, None
        return 0, ("module", data)

    def cuModuleGetFunction(self, module, name):
        self.calls.append(("cuModuleGetFunction", name))
        return 0, ("fn", module[1])

    def cuFuncSetAttribute(self, fn, attr, value):
        self.calls.append(("cuFuncSetAttribute", attr, value))
        return (0,)

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        # like the real driver, read the parameters during the call (the caller frees them afterwards)
        self.calls.append(("cuLaunchKernel", fn, (gx, gy, gz), (bx, by, bz), shared, stream,
                           _read_params(params, self.param_types)))
        return (0,)


def _fake_kernel_dir(path, sm=89, shared=57472, ptxas="13.4", num_ctas=1):
    """A kernel directory as smpler-aot writes it (format, fields), with placeholder binaries."""
    entries = []
    for kernel in abi.KERNEL_NAMES:
        for dtype in abi.DTYPES:
            spec = abi.variant_spec(kernel, dtype)
            stem = f"{kernel}_{dtype}_sm{sm}"
            cubin, ptx = f"CUBIN-{kernel}-{dtype}-{sm}".encode(), f"// PTX {kernel} {dtype} {sm}\n"
            (path / f"{stem}.cubin").write_bytes(cubin)
            (path / f"{stem}.ptx").write_text(ptx)
            entries.append({"kernel": kernel, "dtype": dtype, "sm": sm, "entry_name": f"{kernel}_kernel",
                            "cubin": f"{stem}.cubin", "cubin_sha256": hashlib.sha256(cubin).hexdigest(),
                            "ptx": f"{stem}.ptx", "ptx_sha256": hashlib.sha256(ptx.encode()).hexdigest(),
                            "ptx_version": "8.5", "ptx_min_driver": 12050, "ptxas_cuda": ptxas,
                            "num_warps": 4, "num_ctas": num_ctas, "threads_per_block": 128, "shared": shared,
                            "grid": spec["grid"], "constexprs": spec["constexprs"],
                            "args": [{"name": n, "type": t} for n, t in spec["args"]]
                            + [{"name": n, "type": "*i8"} for n in abi.HIDDEN_ARGS]})
    (path / "index.json").write_text(json.dumps({"format": 2, "triton_version": abi.TRITON_VERSION_PIN,
                                                 "kernel_abi": abi.KERNEL_ABI, "kernels": entries}))
    return path


def _read_params(address, types_):
    arr = (ctypes.c_void_p * len(types_)).from_address(address)
    ct = {"i32": ctypes.c_int32}
    return [ctypes.cast(arr[i], ctypes.POINTER(ct.get(t, ctypes.c_uint64))).contents.value for i, t in enumerate(types_)]


def _desc(t, *dims):
    return types.SimpleNamespace(type=t, dims=dims, format=trt.TensorFormat.LINEAR)


GLOBAL_IN = [(2, 4, 26, 4, 128), (2, 3136, 128), (2, 784, 128), (2, 196, 128), (2, 49, 128)]
LOCAL_IN = [(1, 56, 56, 128), (1, 24, 2), (1, 24, 4, 128), (4, 9, 9)]


@pytest.fixture
def driver(tmp_path, monkeypatch):
    """Plugins wired to a fresh fake driver and an empty launch cache; returns a factory for the driver."""
    state = {}

    def make(sm=89, **kw):
        state["fake"] = _FakeDriver(sm=sm, **kw)
        return state["fake"]

    monkeypatch.setattr(L, "cuda_driver", lambda: state["fake"])
    for name in ("_functions", "_sm"):
        monkeypatch.setattr(L, name, {})
    monkeypatch.setattr(L, "_driver_version", [])
    yield make


def _global_plugin(phase, kernel_dir):
    plugin_cls, _ = P._make_classes(trt)
    return plugin_cls("SmplerGlobalAttention", "g0", phase=phase, kernel_dir=kernel_dir)


def test_kernel_resolved_once_per_context_not_per_enqueue(tmp_path, driver):
    _fake_kernel_dir(tmp_path)
    entry = next(e for e in json.loads((tmp_path / "index.json").read_text())["kernels"]
                 if e["kernel"] == "global_attention" and e["dtype"] == "fp32")
    fake = driver(param_types=[a["type"] for a in entry["args"]])
    F = trt.DataType.FLOAT
    ins, outs = [_desc(F, *s) for s in GLOBAL_IN], [_desc(F, *GLOBAL_IN[0])]
    plugin = _global_plugin(trt.TensorRTPhase.RUNTIME, tmp_path).attach_to_context(None)
    plugin.on_shape_change(ins, outs)  # TensorRT: once per shape change, before the enqueues
    assert fake.names() == ["cuCtxGetCurrent", "cuCtxGetDevice", "cuDeviceGetAttribute", "cuDeviceGetAttribute",
                            "cuDeviceGetAttribute", "cuDriverGetVersion", "cuModuleLoadData", "cuModuleGetFunction", "cuFuncSetAttribute"]
    assert fake.calls[6][1] == b"CUBIN-global_attention-fp32-89"  # a CUDA 13 driver loads the cubin
    assert ("cuFuncSetAttribute", "max_dyn_smem", 57472) in fake.calls  # > 48 KiB needs the opt-in
    fake.calls.clear()
    ptrs = [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]
    for i in range(5):
        plugin.enqueue(ins, outs, ptrs, [0x6000 + 0x100 * (i % 2)], 0, 77)
    assert fake.names() == ["cuLaunchKernel"] * 5  # no queries, no index search per enqueue
    launch = fake.calls[-1]
    assert launch[2:6] == ((4, 2, 4), (128, 1, 1), 57472, ("stream", 77))
    assert launch[6] == [0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 104, 128, 3136, 784, 196, 49, 0, 0]
    assert fake.calls[-2][6][5] == 0x6100  # the packed pointers follow the addresses
    # another layer (or execution context) in the same CUDA context shares the loaded module
    other = _global_plugin(trt.TensorRTPhase.RUNTIME, tmp_path)
    fake.calls.clear()
    other.on_shape_change(ins, outs)
    assert fake.names() == ["cuCtxGetCurrent"]
    # a new shape set re-plans without reloading; a new CUDA context loads its own module
    plugin.on_shape_change([_desc(F, 1, *s[1:]) for s in GLOBAL_IN], outs)
    assert "cuModuleLoadData" not in fake.names()
    fake.ctx = 0xC1
    fake.calls.clear()
    plugin.on_shape_change(ins, outs)
    assert fake.names().count("cuModuleLoadData") == 1 and fake.names().count("cuCtxGetDevice") == 1


def test_build_phase_needs_no_gpu_and_enqueue_resolves_lazily(tmp_path, driver):
    _fake_kernel_dir(tmp_path)
    fake = driver(param_types=["*fp32"] * 6 + ["i32"] * 6 + ["*i8"] * 2)
    F = trt.DataType.FLOAT
    ins = [_desc(F, *s) for s in GLOBAL_IN]
    plugin = _global_plugin(trt.TensorRTPhase.BUILD, tmp_path)
    plugin.on_shape_change(ins, ins[:1])  # TensorRT-RTX builds call it without a GPU: no driver call
    assert fake.calls == []
    plugin.enqueue(ins, ins[:1], [16, 32, 48, 64, 80], [96], 0, 0)  # a timing build: resolved at first use
    assert fake.names().count("cuModuleLoadData") == 1 and fake.names()[-1] == "cuLaunchKernel"


def test_empty_batch_launches_nothing(tmp_path, driver):
    _fake_kernel_dir(tmp_path)
    fake = driver()
    H, F = trt.DataType.HALF, trt.DataType.FLOAT
    plugin_cls, _ = P._make_classes(trt)
    plugin = plugin_cls("SmplerLocalAttention", "l0", phase=trt.TensorRTPhase.RUNTIME, kernel_dir=tmp_path)
    ins = [_desc(H, 0, 56, 56, 128), _desc(F, 0, 24, 2), _desc(H, 0, 24, 4, 128), _desc(F, 4, 9, 9)]
    plugin.on_shape_change(ins, ins[2:3])
    plugin.enqueue(ins, ins[2:3], [16, 32, 48, 64], [80], 0, 0)
    assert "cuLaunchKernel" not in fake.names()


def test_misaligned_buffer_refused(tmp_path, driver):
    _fake_kernel_dir(tmp_path)
    driver()
    F = trt.DataType.FLOAT
    ins = [_desc(F, *s) for s in GLOBAL_IN]
    plugin = _global_plugin(trt.TensorRTPhase.RUNTIME, tmp_path)
    plugin.on_shape_change(ins, ins[:1])
    with pytest.raises(SmplerError, match=r"g0: buffer k1_ptr at 0x2008 is not 16-byte aligned"):
        plugin.enqueue(ins, ins[:1], [0x1000, 0x2000, 0x2008, 0x3000, 0x4000], [0x5000], 0, 0)


def test_multi_cta_kernel_refused(tmp_path, driver):
    _fake_kernel_dir(tmp_path, num_ctas=2)
    driver()
    F = trt.DataType.FLOAT
    ins = [_desc(F, *s) for s in GLOBAL_IN]
    with pytest.raises(SmplerError, match="num_ctas=2"):
        _global_plugin(trt.TensorRTPhase.RUNTIME, tmp_path).on_shape_change(ins, ins[:1])


@pytest.mark.parametrize("version,cubin_loads,loaded", [
    (12060, True, ["PTX"]),  # CUDA 12 driver, CUDA 13 ptxas cubin: straight to the PTX
    (13000, False, ["CUBIN", "PTX"]),  # the cubin fails to load: fall back to the PTX
    (13000, True, ["CUBIN"]),
])
def test_ptx_when_the_driver_cannot_take_the_cubin(tmp_path, driver, version, cubin_loads, loaded):
    _fake_kernel_dir(tmp_path, sm=90, ptxas="13.4")
    fake = driver(sm=90, version=version, cubin_loads=cubin_loads)
    fn = L.resolve_function(fake, "local_attention", "fp16", tmp_path)
    images = [c[1] for c in fake.calls if c[0] == "cuModuleLoadData"]
    assert ["PTX" if i.startswith(b"// PTX") else "CUBIN" for i in images] == loaded
    assert fn.image == loaded[-1].lower()
    if "PTX" in loaded:
        assert images[-1] == b"// PTX local_attention fp16 90\n\0"  # NUL-terminated text for the JIT


def test_prepared_launch_callable_without_tensorrt(tmp_path, driver):
    """PreparedLaunch, what the plugins' enqueue and smpler-check-gpu's AOT step launch through, with plain device
    pointers and shapes (no TensorRT descriptors); an empty batch launches nothing."""
    _fake_kernel_dir(tmp_path)
    fake = driver(param_types=["*fp16", "*fp32", "*fp16", "*fp32", "*fp16", "i32", "i32", "i32", "*i8", "*i8"])
    fn = L.resolve_function(fake, "local_attention", "fp16", tmp_path)
    ptrs = [0x100, 0x200, 0x300, 0x400, 0x500]
    assert L.PreparedLaunch(fake, fn, LOCAL_IN, "check local")(ptrs, stream=5)
    assert fake.calls[-1][2] == (24, 1, 1) and fake.calls[-1][6][5:8] == [24, 56, 128]
    n = len(fake.calls)
    empty = L.PreparedLaunch(fake, fn, [(0, *s[1:]) for s in LOCAL_IN[:3]] + LOCAL_IN[3:], "check local")
    assert not empty(ptrs, stream=5) and len(fake.calls) == n


def test_enqueue_missing_sm_names_command(tmp_path, driver, plugin_errors):
    _fake_kernel_dir(tmp_path)
    driver(sm=75)
    plugin_cls, _ = P._make_classes(trt)
    plugin = plugin_cls("SmplerLocalAttention", "l0", kernel_dir=tmp_path)
    H, F = trt.DataType.HALF, trt.DataType.FLOAT
    ins = [_desc(H, *LOCAL_IN[0]), _desc(F, *LOCAL_IN[1]), _desc(H, *LOCAL_IN[2]), _desc(F, *LOCAL_IN[3])]
    with pytest.raises(SmplerError, match=r"local_attention \(fp16\): no cubin for sm_75 .*smpler-aot --sm 75"):
        plugin.enqueue(ins, ins[2:3], [16, 32, 48, 64], [80], 0, 0)
    assert "sm_75" in plugin_errors()[-1]


def test_cuda_python_is_lazy():
    """The TensorRT side imports cuda-python only when it launches (torch imports it on its own, so check in a
    process without torch)."""
    import subprocess
    import sys

    pytest.importorskip("cuda.bindings")  # without cuda-python nothing could import it: the check would be empty
    code = ("import sys, smpler_deploy.trt.plugins, smpler_deploy.runtime.tensorrt, smpler_deploy.engine.builder; "
            "mods = lambda: sorted(m for m in sys.modules if m == 'cuda' or m.startswith('cuda.')); "
            "print(mods()); import cuda.bindings.driver; print('cuda.bindings.driver' in mods())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True"]  # nothing imported it; the same probe sees it once something does


# ------------------------------------------------------------------------------ ONNX custom nodes

def test_onnx_nodes(onnx_files, tmp_path):
    from smpler_deploy.model import attention as ref

    model = onnx.load(str(onnx_files["float16"]))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 19), ("smpler", 1)}
    nodes = {n.op_type: n for n in model.graph.node if n.domain == "smpler"}
    assert set(nodes) == {"SmplerLocalAttention", "SmplerGlobalAttention"}
    attrs = {k: {a.name: helper.get_attribute_value(a) for a in n.attribute} for k, n in nodes.items()}
    assert attrs["SmplerLocalAttention"] == {"radius": 4, "plugin_namespace": b"smpler", "plugin_version": b"1"}
    assert attrs["SmplerGlobalAttention"] == {"plugin_namespace": b"smpler", "plugin_version": b"1"}
    assert list(nodes["SmplerLocalAttention"].input) == ["feat", "joints", "qk", "table"]  # no no-op Casts
    typed = {v.name: v.type.tensor_type for v in list(model.graph.value_info) + list(model.graph.output)}
    out = typed[nodes["SmplerLocalAttention"].output[0]]
    assert out.elem_type == TensorProto.FLOAT16 and [d.dim_param or d.dim_value for d in out.shape.dim] == ["B", J, NH, C]
    assert sorted(op for _, op in onnx_nodes.plugin_nodes(model)) == ["SmplerGlobalAttention", "SmplerLocalAttention"]

    with pytest.raises(SmplerError, match=r"attn_float16.onnx: graph contains TensorRT plugin nodes "
                                          r"\(SmplerLocalAttention, SmplerGlobalAttention\); ONNX Runtime cannot run "
                                          r"them — export without `plugins`"):
        onnx_nodes.assert_no_plugins(onnx_files["float16"])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(plain, tmp_path / "plain.onnx")
    onnx_nodes.assert_no_plugins(tmp_path / "plain.onnx")
    with pytest.raises(SmplerError, match="not found"):
        onnx_nodes.assert_no_plugins(tmp_path / "missing.onnx")

    # eager: the reference functions
    g = torch.Generator().manual_seed(1)
    feat, qk = torch.randn(2, S, S, C, generator=g), torch.randn(2, J, NH, C, generator=g)
    joints, table = torch.rand(2, J, 2, generator=g) * 2.6 - 1.3, torch.randn(NH, 9, 9, generator=g)
    assert torch.equal(onnx_nodes.local_attention_plugin(feat, joints, qk, table),
                       ref.local_attention(feat, joints, qk, table))
    keys, gqk = [torch.randn(2, n, C, generator=g) for n in KEYS], torch.randn(2, 4, Q, NH, C, generator=g)
    assert torch.equal(onnx_nodes.global_attention_multiscale_plugin(keys, gqk),
                       ref.global_attention_multiscale(keys, gqk))


def test_registered_kernel_dir_reaches_the_plugins_without_the_environment(tmp_path, monkeypatch):
    """The kernel directory a session or a build registers the plugins with is the one their plugins load from:
    passed along, not read from $SMPLER_KERNEL_DIR or a module global; a later registration (another session)
    does not move the plugins already made."""
    monkeypatch.setenv("SMPLER_KERNEL_DIR", str(tmp_path / "env"))  # only the commands' default: ignored here
    a, b = tmp_path / "a", tmp_path / "b"
    P.register_smpler_plugins(trt, "tensorrt-rtx", "g.onnx", [], kernel_dir=a)
    creator = P.get_creator(trt, "SmplerGlobalAttention")
    first = creator.create_plugin("g0", None, trt.TensorRTPhase.RUNTIME)
    P.register_smpler_plugins(trt, "tensorrt-rtx", "g.onnx", [], kernel_dir=b)
    second = creator.create_plugin("g1", None, trt.TensorRTPhase.RUNTIME)
    assert (first.kernel_dir, first.clone().kernel_dir, second.kernel_dir) == (a, a, b)


def test_importing_tensorrt_rtx_writes_nothing_into_site_packages(tmp_path, monkeypatch):
    """The wheel's missing soname link is created only where plugins are registered, never by an import."""
    from smpler_deploy.trt import importer

    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"")
    monkeypatch.setattr(importer, "rtx_libs_dir", lambda: tmp_path)
    importer.import_trt("tensorrt-rtx")
    assert not (tmp_path / "libtensorrt_rtx.so").exists()
    assert importer.ensure_rtx_soname() and (tmp_path / "libtensorrt_rtx.so").is_symlink()
