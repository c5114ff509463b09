"""The attention plugins in real TensorRT-RTX builds for SM89 (no GPU needed), plus the enqueue path on a fake
CUDA driver (what cannot run here: the kernels themselves on a GPU)."""

import ctypes
import hashlib
import json
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from smpler_deploy.errors import SmplerError
from smpler_deploy.plugins import aot, onnx_nodes
from smpler_deploy.plugins import trt_plugins as P

try:
    from smpler_deploy.engine.trt_import import import_trt

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
def test_build_sm89_custom_layers(onnx_files, dtype, trt_type):
    assert P.register_plugins(trt) == ["SmplerLocalAttention", "SmplerGlobalAttention"]
    assert P.register_plugins(trt) == ["SmplerLocalAttention", "SmplerGlobalAttention"]  # idempotent
    log, network, plan = _build(onnx_files[dtype])
    assert plan is not None and plan.nbytes > 0, P.plugin_errors()
    kinds = {network.get_layer(i).name: network.get_layer(i).type for i in range(network.num_layers)}
    assert kinds["/SmplerLocalAttention"] == kinds["/SmplerGlobalAttention"] == trt.LayerType.PLUGIN_V3
    layers = _layers_section(log.lines)
    for op in ("SmplerLocalAttention", "SmplerGlobalAttention"):
        rows = [ln for ln in layers if ln.startswith(f"Name: /{op}")]
        assert len(rows) == 1 and "LayerType: custom_layer" in rows[0], rows  # kept, not replaced or fused away
        assert f"Datatype: {trt_type}" in rows[0] and "[-1," in rows[0]  # strongly typed, dynamic batch
    local = next(ln for ln in layers if ln.startswith("Name: /SmplerLocalAttention"))
    assert "Name: joints, Dimensions: [-1,3,2]" in local and "Datatype: Float, Format" in local  # joints fp32
    assert not P.plugin_errors()


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
def test_unsupported_dtype_names_layer(tmp_path, feat_t, qk_t, joints_t, bad):
    P.register_plugins(trt)
    P.plugin_errors()
    _, _, _, ok, errors = _parse(_local_node_model(tmp_path / "bad.onnx", feat_t, qk_t, joints_t))
    assert not ok and any("local_bad" in e for e in errors), errors  # the parser names the node
    msgs = P.plugin_errors()  # and our reason, which TensorRT reduces to "non-zero return code"
    assert len(msgs) == 1 and msgs[0].startswith("local_bad (SmplerLocalAttention): unsupported input types")
    assert bad in msgs[0] and "expected feat_nhwc and qk both fp32 or both fp16" in msgs[0]


def test_unsupported_shape_refused_at_build(tmp_path):
    P.register_plugins(trt)
    P.plugin_errors()
    log, _, plan = _build(_local_node_model(tmp_path / "c256.onnx", TensorProto.FLOAT, TensorProto.FLOAT, c=256))
    assert plan is None
    msgs = P.plugin_errors()
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
    """Just enough of cuda.bindings.driver to run the plugin's enqueue path and record the launch."""

    class CUresult:
        CUDA_SUCCESS = 0

    class CUdevice_attribute:
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = "major"
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = "minor"

    class CUfunction_attribute:
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = "max_dyn_smem"

    def __init__(self, sm, ctx=0xC0, param_types=()):
        self.sm, self.ctx, self.calls, self.param_types = sm, ctx, [], param_types

    def CUstream(self, s):
        return ("stream", s)

    def cuCtxGetCurrent(self):
        return 0, self.ctx

    def cuCtxGetDevice(self):
        return 0, 0

    def cuDeviceGetAttribute(self, attr, dev):
        return 0, self.sm // 10 if attr == "major" else self.sm % 10

    def cuModuleLoadData(self, data):
        self.calls.append(("load", bytes(data)))
        return 0, "module"

    def cuModuleGetFunction(self, module, name):
        self.calls.append(("function", name))
        return 0, "fn"

    def cuFuncSetAttribute(self, fn, attr, value):
        self.calls.append(("attr", attr, value))
        return (0,)

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        # like the real driver, read the parameters during the call (the caller frees them afterwards)
        self.calls.append(("launch", (gx, gy, gz), (bx, by, bz), shared, stream, _read_params(params, self.param_types)))
        return (0,)


def _fake_kernel_dir(path, sm=89, shared=57472):
    entries = []
    for kernel in aot.KERNEL_NAMES:
        for dtype in aot.DTYPES:
            spec = aot.variant_spec(kernel, dtype)
            blob = f"{kernel}-{dtype}-{sm}".encode()
            stem = f"{kernel}_{dtype}_sm{sm}"
            (path / f"{stem}.cubin").write_bytes(blob)
            entries.append({"kernel": kernel, "dtype": dtype, "sm": sm, "entry_name": f"{kernel}_kernel",
                            "cubin": f"{stem}.cubin", "cubin_sha256": hashlib.sha256(blob).hexdigest(),
                            "num_warps": 4, "threads_per_block": 128, "shared": shared, "grid": spec["grid"],
                            "constexprs": spec["constexprs"],
                            "args": [{"name": n, "type": t} for n, t in spec["args"]]
                            + [{"name": n, "type": "*i8"} for n in aot.HIDDEN_ARGS]})
    (path / "index.json").write_text(json.dumps({"format": 1, "triton_version": "3.9.0", "kernel_abi": 1,
                                                 "kernels": entries}))
    return path


def _read_params(address, types_):
    arr = (ctypes.c_void_p * len(types_)).from_address(address)
    ct = {"i32": ctypes.c_int32}
    return [ctypes.cast(arr[i], ctypes.POINTER(ct.get(t, ctypes.c_uint64))).contents.value for i, t in enumerate(types_)]


def test_enqueue_launches_planned_kernel(tmp_path, monkeypatch):
    P.set_kernel_dir(_fake_kernel_dir(tmp_path))
    index = json.loads((tmp_path / "index.json").read_text())
    entry = next(e for e in index["kernels"] if e["kernel"] == "global_attention" and e["dtype"] == "fp32")
    fake = _FakeDriver(sm=89, param_types=[a["type"] for a in entry["args"]])
    monkeypatch.setattr(P, "_cuda", lambda: fake)
    monkeypatch.setattr(P, "_functions", {})
    try:
        plugin_cls, _ = P._make_classes(trt)
        plugin = plugin_cls("SmplerGlobalAttention", "g0")
        desc = lambda *d: types.SimpleNamespace(type=trt.DataType.FLOAT, dims=d)  # noqa: E731
        ins = [desc(2, 4, 26, 4, 128), desc(2, 3136, 128), desc(2, 784, 128), desc(2, 196, 128), desc(2, 49, 128)]
        plugin.enqueue(ins, [desc(2, 4, 26, 4, 128)], [0x1000, 0x2000, 0x3000, 0x4000, 0x5000], [0x6000], 0, 77)
        launch = fake.calls[-1]
        assert ("load", b"global_attention-fp32-89") in fake.calls
        assert ("function", b"global_attention_kernel") in fake.calls
        assert ("attr", "max_dyn_smem", 57472) in fake.calls  # > 48 KiB needs the opt-in
        assert launch[1:5] == ((4, 2, 4), (128, 1, 1), 57472, ("stream", 77))
        assert launch[5] == [0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000,
                                                   104, 128, 3136, 784, 196, 49, 0, 0]
        # a second enqueue reuses the loaded module
        n_loads = sum(c[0] == "load" for c in fake.calls)
        plugin.enqueue(ins, [desc(2, 4, 26, 4, 128)], [1, 2, 3, 4, 5], [6], 0, 77)
        assert sum(c[0] == "load" for c in fake.calls) == n_loads
    finally:
        P.set_kernel_dir(None)


def test_enqueue_missing_sm_names_command(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "_cuda", lambda: _FakeDriver(sm=75))
    monkeypatch.setattr(P, "_functions", {})
    P.set_kernel_dir(_fake_kernel_dir(tmp_path))
    try:
        plugin_cls, _ = P._make_classes(trt)
        plugin = plugin_cls("SmplerLocalAttention", "l0")
        d = lambda t, *s: types.SimpleNamespace(type=t, dims=s)  # noqa: E731
        H, F = trt.DataType.HALF, trt.DataType.FLOAT
        ins = [d(H, 1, 56, 56, 128), d(F, 1, 24, 2), d(H, 1, 24, 4, 128), d(F, 4, 9, 9)]
        with pytest.raises(SmplerError, match=r"local_attention \(fp16\): no cubin for sm_75 .*smpler-aot --sm 75"):
            plugin.enqueue(ins, [d(H, 1, 24, 4, 128)], [1, 2, 3, 4], [5], 0, 0)
        assert "sm_75" in P.plugin_errors()[-1]
    finally:
        P.set_kernel_dir(None)


def test_cuda_python_is_lazy():
    import sys

    assert "cuda.bindings" not in sys.modules and "cuda.cuda" not in sys.modules


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
                                          r"them — export without --plugins"):
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
