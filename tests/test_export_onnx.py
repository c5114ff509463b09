"""The exported ONNX graphs (session fixtures from conftest: each precision is exported once per run).

Fidelity thresholds are ~2x what was measured on the default untrained model, batch 4 of `fidelity_inputs()`,
against PyTorch fp32 (measured values in the comments).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smpler_deploy import OUTPUT_NAMES, SmplerError, __version__
from smpler_deploy.export.int8 import check_trt_compatible, quantized_nodes
from smpler_deploy.export.onnx_export import (FORBIDDEN_OPS, OPSET, fidelity_inputs, graph_report, measure_fidelity,
                                              torch_reference)
from smpler_deploy.fidelity import fidelity
from smpler_deploy.outputs import CROP_SIZE, INPUT_NAME
from smpler_deploy.runtime.ort_session import OnnxRuntimeSession, graph_traits

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_LOADED: dict = {}


def load(path):
    """Each graph is parsed once per run (they are ~100 MB)."""
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = onnx.load(key)
    return _LOADED[key]


def meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ---------------------------------------------------------------- structure, checker, I/O, metadata

# fp16 first: it needs no fp32 graph, so this worker traces it while another runs smpler-export for the fp32 one
# (conftest's cli_fp32_export, which the bench tests also want early) instead of waiting on that export
@pytest.mark.parametrize("fixture", ["onnx_fp16", "onnx_fp32", "onnx_int8_trt", "onnx_int8_cpu"])
def test_opset_io_forbidden_ops_and_metadata(fixture, request):
    path = request.getfixturevalue(fixture)
    m = load(path)
    assert opset(m) >= 19 and OPSET >= 19
    assert [i.name for i in m.graph.input] == [INPUT_NAME]
    assert [o.name for o in m.graph.output] == list(OUTPUT_NAMES)
    for v in list(m.graph.input) + list(m.graph.output):  # I/O stay float32 at every precision
        assert v.type.tensor_type.elem_type == TensorProto.FLOAT, v.name
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # batch is symbolic
    assert [d.dim_value for d in dims[1:]] == [3, CROP_SIZE, CROP_SIZE]
    for o in m.graph.output:
        assert o.type.tensor_type.shape.dim[0].dim_param, o.name
    ops = {n.op_type for n in m.graph.node}
    assert not ops & set(FORBIDDEN_OPS), ops & set(FORBIDDEN_OPS)
    assert graph_report(m)["forbidden"] == {}
    md = meta(m)
    precision = {"onnx_fp32": "fp32", "onnx_fp16": "fp16"}.get(fixture, "int8")
    assert md["variant"] == "smpler"
    assert md["precision"] == precision
    assert md["opset"] == str(OPSET)
    assert "checkpoint_sha256" in md and md["checkpoint"].startswith("none")  # default model: no checkpoint hash
    assert md["body_model_standin"] == "true"
    assert md["package_version"] == __version__
    assert md["plugins"] == "false"


@pytest.mark.parametrize("fixture", ["onnx_fp32", "onnx_fp16"])
def test_checker_and_shape_inference(fixture, request):
    path = request.getfixturevalue(fixture)
    onnx.checker.check_model(str(path), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(load(path), check_type=True, strict_mode=True)
    assert len(inferred.graph.value_info) > 0


def _elem_types(model) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:  # Constant nodes carry their own type
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def test_fp16_graph_mixed_precision(onnx_fp16):
    m = load(onnx_fp16)
    inits = {t.name: t for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs
    conv_w = [inits[n.input[1]].data_type for n in convs if n.input[1] in inits]
    assert conv_w and all(t == TensorProto.FLOAT16 for t in conv_w), "conv weights must be fp16 initializers"
    assert graph_traits(m)["fp16"]
    types = _elem_types(m)
    norm_soft = [n for n in m.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norm_soft, "expected LayerNormalization/Softmax nodes"
    for n in norm_soft:
        assert types.get(n.input[0]) == TensorProto.FLOAT, f"{n.op_type} {n.name} input is not float32"
    assert any(t == TensorProto.FLOAT16 for t in types.values())


# ---------------------------------------------------------------- int8

def test_int8_trt_layout_and_policy(onnx_int8_trt):
    m = load(onnx_int8_trt)
    check_trt_compatible(m)
    inits = {t.name: t for t in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        if len(n.input) > 2 and n.input[2]:
            zp = numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype != np.int32 and not np.any(zp != 0), n.name
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # no int32 bias DQ
            assert inits[n.input[0]].data_type != TensorProto.INT32, n.name
    _check_quantized_policy(m, "trt")


def test_int8_cpu_quantized_backbone_convs(onnx_int8_cpu):
    _check_quantized_policy(load(onnx_int8_cpu), "cpu")


class _Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.mid, self.last = (torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.Conv2d(4, 4, 3, 1, 1),
                                          torch.nn.Conv2d(4, 4, 1))

    def forward(self, x):
        a = torch.relu(self.stem(x * 0.5 + 0.25))
        raw = self.mid(a)
        b = raw + a * a  # `a` feeds the conv, the Mul twice, and the decoder
        return a, raw, self.last(b) - b


class _Fanout(torch.nn.Module):
    """Backbone convolutions (nodes named /backbone/..., as SMPLer's) with a decoder that reads across the cut: a
    conv output (quantized on the cpu target), a Relu output, a tensor made after the last conv."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = _Backbone(), torch.nn.Linear(4, 3)

    def forward(self, x):
        a, raw, c = self.backbone(x)
        return self.head(c.mean((2, 3))) + raw.mean((1, 2, 3)).unsqueeze(-1) + a.amax((1, 2, 3)).unsqueeze(-1)


def _same_graph(x, y):
    """Equal but for the order of the nodes."""
    def key(m):
        g = m.graph
        return (sorted(n.SerializeToString() for n in g.node), {t.name: t.SerializeToString() for t in g.initializer},
                sorted(v.SerializeToString() for v in g.value_info), [i.SerializeToString() for i in g.input],
                [o.SerializeToString() for o in g.output], [(p.key, p.value) for p in m.metadata_props],
                [(o.domain, o.version) for o in m.opset_import], m.ir_version, m.producer_name)
    for a, b, what in zip(key(x), key(y), ("nodes", "initializers", "value_info", "inputs", "outputs", "metadata",
                                          "opsets", "ir_version", "producer")):
        assert a == b, what


@pytest.mark.parametrize("target", ["trt", "cpu"])
def test_int8_quantizing_the_backbone_part_writes_the_whole_graphs_quantization(target, tmp_path):
    """export/int8 hands ORT only the part of the graph the backbone convolutions need and merges it back; the
    result must be what ORT writes quantizing the whole graph."""
    from smpler_deploy.export.graph_part import cut
    from smpler_deploy.export.int8 import backbone_convs, quantize

    torch.manual_seed(0)
    src = tmp_path / "fanout.onnx"
    torch.onnx.export(_Fanout().eval(), (torch.randn(1, 3, 16, 16),), str(src), input_names=[INPUT_NAME],
                      output_names=["y"], dynamo=False, opset_version=19)
    fp32 = onnx.load(str(src))
    part = cut(fp32, set(backbone_convs(fp32)))
    assert part is not None and len(part.exits) >= 3 and len(part.inside) < len(fp32.graph.node)
    images = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    fast, plain = tmp_path / "part.onnx", tmp_path / "whole.onnx"
    quantize(src, fast, images, target=target)
    quantize(src, plain, images, target=target, whole_graph=True)
    m = load(fast)
    assert len(quantized_nodes(m)) == 3
    _same_graph(m, load(plain))
    import onnxruntime as ort

    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: images[:1]})[0]
            for p in (fast, plain))
    np.testing.assert_array_equal(a, b)


def test_graph_part_refuses_a_cut_that_would_change_the_quantization():
    """A graph input read by a target and by the rest: ORT would rewire both readers; the cut could not."""
    from smpler_deploy.export.graph_part import cut

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="/backbone/Conv"),
                           helper.make_node("Add", ["c", "x"], ["y"], name="/head/Add")], "g", [x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    assert cut(m, {"/backbone/Conv"}) is None
    m.graph.node[1].input[1] = "c"  # the rest reads only what the part makes
    assert cut(m, {"/backbone/Conv"}).exits == ("c",)


# ---------------------------------------------------------------- int8 cpu: no int16 saturation on AVX2 CPUs
# ONNX Runtime's u8s8 kernels on AVX2 CPUs without VNNI multiply with vpmaddubsw: int16 with saturation of
# a[2k]*w[2k] + a[2k+1]*w[2k+1] (a uint8 activations, w int8 weights). VNNI CPUs (this one, maybe) accumulate in
# int32 and never saturate, so the graph is checked by arithmetic, not by running it here.


def _conv_weights(m):
    """(conv node, int8 weight initializer, its per-channel scale) for every weight-quantized conv."""
    inits = {t.name: t for t in m.graph.initializer}
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    for n in m.graph.node:
        if n.op_type == "Conv" and n.input[1] in dq:
            d = dq[n.input[1]]
            yield n, inits[d.input[0]], numpy_helper.to_array(inits[d.input[1]])


def test_int8_cpu_weights_cannot_saturate_int16(onnx_int8_cpu):
    from smpler_deploy.export.int8 import CPU_WEIGHT_RANGE, INT16_MAX, check_no_int16_saturation

    m = load(onnx_int8_cpu)
    assert meta(m)["weight_bits"] == "7"
    convs = list(_conv_weights(m))
    assert convs and {n.name for n, _, _ in convs} == set(quantized_nodes(m))
    for n, w, _ in convs:
        assert w.data_type == TensorProto.INT8, n.name
        a = numpy_helper.to_array(w).astype(np.int32)
        assert CPU_WEIGHT_RANGE == (-64, 64) and -64 <= a.min() and a.max() <= 64, (n.name, a.min(), a.max())
        assert 2 * 255 * np.abs(a).max() <= INT16_MAX  # worst pair sum vpmaddubsw can form
    inits = {t.name for t in m.graph.initializer}
    acts = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert acts and all(n.output[0] and _zp_type(m, n) == TensorProto.UINT8 for n in acts)  # u8 activations
    check_no_int16_saturation(m)


def _zp_type(m, q):
    return next(t.data_type for t in m.graph.initializer if t.name == q.input[2])


def _vpmaddubsw_saturations(a_u8: np.ndarray, w_s8: np.ndarray) -> int:
    """How many int16 pair sums of `a_u8` [M, K] x `w_s8` [K, N] leave the int16 range (K in the kernel's order)."""
    a = a_u8.astype(np.int32)
    w = w_s8.astype(np.int32)
    if a.shape[1] % 2:  # the kernel pads K with zeros
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    count = 0
    for i in range(0, len(a), 256):
        pair = a[i:i + 256, 0::2, None] * w[None, 0::2] + a[i:i + 256, 1::2, None] * w[None, 1::2]
        count += int(np.count_nonzero((pair > 32767) | (pair < -32768)))
    return count


def test_vpmaddubsw_emulation_old_layout_saturates_new_does_not(onnx_int8_cpu, onnx_fp32):
    """The stem conv on 2 held-out crops, activations quantized with the graph's calibrated uint8 scale/zero
    point, im2col in ONNX Runtime's NHWC order (kh, kw, cin): 8-bit weights (the old layout) saturate, the graph's
    7-bit weights do not."""
    m, f = load(onnx_int8_cpu), load(onnx_fp32)
    stem, w7, _ = next((n, w, s) for n, w, s in _conv_weights(m) if "/backbone/" in n.name)
    # the stem reads the graph input (through a Cast) via Q/DQ with the calibrated uint8 scale and zero point
    prod = {o: n for n in m.graph.node for o in n.output}
    q = prod[prod[stem.input[0]].input[0]]
    src = prod.get(q.input[0])
    assert q.op_type == "QuantizeLinear"
    assert q.input[0] == INPUT_NAME or (src.op_type == "Cast" and src.input[0] == INPUT_NAME)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    x_scale, x_zp = float(inits[q.input[1]]), int(inits[q.input[2]])
    fw = {t.name: t for t in f.graph.initializer}
    fconv = next(n for n in f.graph.node if n.name == stem.name)
    w_fp = numpy_helper.to_array(fw[fconv.input[1]]).astype(np.float64)  # [N, C, kh, kw]
    attrs = {a.name: helper.get_attribute_value(a) for a in stem.attribute}
    (kh, kw), (sh, sw), pads = w_fp.shape[2:], attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
    assert attrs.get("group", 1) == 1 and pads[0] == pads[2] and pads[1] == pads[3]
    from smpler_deploy.preprocess import heldout_crops

    x = heldout_crops(2)[0]
    xq = np.clip(np.round(x / x_scale) + x_zp, 0, 255).astype(np.uint8)
    xq = np.pad(xq, ((0, 0), (0, 0), (pads[0], pads[0]), (pads[1], pads[1])), constant_values=x_zp)
    xq = xq.transpose(0, 2, 3, 1)  # NHWC
    win = np.lib.stride_tricks.sliding_window_view(xq, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # B,Ho,Wo,C,kh,kw
    patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * xq.shape[-1])  # K order (kh, kw, cin)

    def k_order(w):  # [N, C, kh, kw] -> [K, N] in the same order
        return w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])

    absmax = np.abs(w_fp).reshape(len(w_fp), -1).max(axis=1)[:, None, None, None]
    w8 = np.clip(np.round(w_fp / (absmax / 127)), -127, 127).astype(np.int8)  # ORT's symmetric 8-bit per channel
    new = numpy_helper.to_array(w7)
    assert np.abs(new.astype(np.int32)).max() <= 64
    old_sat, new_sat = _vpmaddubsw_saturations(patches, k_order(w8)), _vpmaddubsw_saturations(patches, k_order(new))
    print(f"{stem.name}: {patches.shape[0]} patches x K {patches.shape[1]} x N {w8.shape[0]}: "
          f"{old_sat} saturating pair sums with 8-bit weights, {new_sat} with 7-bit")
    assert old_sat > 0 and new_sat == 0

def _weight_quantized(m) -> list:
    """Nodes that compute on int8 weights: an input is a DequantizeLinear of an initializer."""
    inits = {t.name for t in m.graph.initializer}
    dq_w = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return [n for n in m.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq_w for i in n.input)]


def _check_quantized_policy(m, target):
    md = meta(m)
    assert md["precision"] == "int8" and md["int8_target"] == target
    recorded = json.loads(md["quantized_nodes"])
    assert recorded == quantized_nodes(m)
    assert int(md["quantized_node_count"]) == len(recorded) > 0
    assert not [n for n in recorded if "/transformer/" in n]  # policy: the decoder stays float
    wq = _weight_quantized(m)
    backbone_convs = {n.name for n in m.graph.node if n.op_type == "Conv" and "/backbone/" in n.name}
    assert wq and {n.name for n in wq} == backbone_convs  # exactly the backbone convolutions run int8
    assert all(n.op_type == "Conv" for n in wq)
    assert set(backbone_convs) <= set(recorded)
    assert not any("/transformer/" in n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear")


@pytest.mark.parametrize("fixture", ["onnx_int8_trt", "onnx_int8_cpu"])
def test_int8_metadata_lists_only_backbone_convs(fixture, request):
    m = load(request.getfixturevalue(fixture))
    ops = {n.name: n.op_type for n in m.graph.node}
    recorded = json.loads(meta(m)["quantized_nodes"])
    extra = [n for n in recorded if ops[n] != "Conv" or "/backbone/" not in n]
    assert not extra, f"{len(extra)} non-conv entries, e.g. {extra[:3]}"


# ---------------------------------------------------------------- fidelity (batch 4, vs PyTorch fp32)

# (mean, max) vertex mm, ~2x what was measured on the default model (residual gain 0.2): fp32 0.00008 / 0.0004
# (the limit is the 0.01 mm an fp32 graph must keep); fp16 0.12 / 0.84; int8 trt 5.2 / 25.6; int8 cpu (7-bit weights)
# 5.95 / 34.6, the same on every x86 CPU since nothing can saturate (the 8-bit layout measured 8.4 / 51 on an
# AVX2-only CPU; test_int8_cpu_weights_cannot_saturate_int16 guards the layout itself, these limits the quality).
THRESHOLDS = {
    "onnx_fp32": (0.005, 0.01),
    "onnx_fp16": (0.3, 2.0),
    "onnx_int8_trt": (11.0, 50.0),
    "onnx_int8_cpu": (11.0, 50.0),
}


@pytest.fixture(scope="module")
def fidelity_reference(default_model):
    """measure_fidelity's torch reference on its fixed crops, computed once for the four graphs."""
    return torch_reference(default_model, fidelity_inputs())


@pytest.mark.parametrize("fixture", list(THRESHOLDS))
def test_fidelity_within_thresholds(fixture, request, default_model, fidelity_reference):
    path = request.getfixturevalue(fixture)
    fid = measure_fidelity(default_model, path, reference=fidelity_reference)
    v = fid["vertices"]
    print(f"{fixture}: vertices mean {v['mean_mm']:.4g} mm max {v['max_mm']:.4g} mm, "
          f"joints max {fid['joints']['max_mm']:.4g} mm, rotmat max {fid['rotmat']['max_deg']:.4g} deg")
    assert fid["finite"] and fid["batch"] == 4
    mean_lim, max_lim = THRESHOLDS[fixture]
    assert v["mean_mm"] < mean_lim and v["max_mm"] < max_lim, v
    assert fid["joints"]["max_mm"] < max_lim


def test_dynamic_batch_matches_pytorch_per_sample(onnx_fp32, default_model):
    x = fidelity_inputs(3)
    with torch.no_grad():
        ref = default_model(torch.from_numpy(x)).numpy()
    sess = OnnxRuntimeSession(onnx_fp32, threads=2)
    try:
        out3 = sess.infer(x)
        f3 = fidelity(ref, out3)
        assert f3["batch"] == 3 and f3["vertices"]["max_mm"] < 0.01
        for i in range(3):
            out1 = sess.infer(x[i: i + 1])
            assert out1.vertices.shape == (1, 6890, 3)
            ref_i = type(ref)(*(r[i: i + 1] for r in ref))
            fi = fidelity(ref_i, out1)
            assert fi["vertices"]["max_mm"] < 0.01 and fi["joints"]["max_mm"] < 0.01
            assert fi["rotmat"]["max_deg"] < 0.01 and fi["cam"]["max_abs"] < 1e-4
    finally:
        sess.close()


# ---------------------------------------------------------------- ORT session guards (tiny synthetic graphs)

def _save(model, path):
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _smpler_like(path, *, qdq: bool, fp16: bool):
    """images [B,3,224,224] -> (Q/DQ) -> (+ fp16 constant) -> the 7 output names (Identity)."""
    nodes, inits, cur = [], [], INPUT_NAME
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "zp")]
        nodes += [helper.make_node("QuantizeLinear", [cur, "s", "zp"], ["q"], name="q"),
                  helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq")]
        cur = "dq"
    if fp16:
        inits.append(numpy_helper.from_array(np.array([1.0], np.float16), "c16"))
        nodes += [helper.make_node("Cast", ["c16"], ["c32"], to=TensorProto.FLOAT, name="cast"),
                  helper.make_node("Add", [cur, "c32"], ["sum"], name="add")]
        cur = "sum"
    nodes += [helper.make_node("Identity", [cur], [o], name=f"id_{o}") for o in OUTPUT_NAMES]
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CROP_SIZE, CROP_SIZE])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in OUTPUT_NAMES]
    g = helper.make_graph(nodes, "tiny", [x], outs, initializer=inits)
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]), path)


def test_session_refuses_mismatched_inputs(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "wrong_io", [x], [y])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]), tmp_path / "wrong_io.onnx")
    with pytest.raises(SmplerError) as ei:
        OnnxRuntimeSession(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "inputs do not match" in msg and "x tensor(float)" in msg


def test_session_refuses_plugin_domain_nodes(tmp_path):
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CROP_SIZE, CROP_SIZE])
    y = helper.make_tensor_value_info("vertices", TensorProto.FLOAT, None)
    node = helper.make_node("FusedAttention", [INPUT_NAME], ["vertices"], domain="smpler", name="attn")
    g = helper.make_graph([node], "plugins", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("smpler", 1)])
    path = _save(model, tmp_path / "plugins.onnx")
    with pytest.raises(SmplerError) as ei:
        OnnxRuntimeSession(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "export without `plugins`" in msg


def test_session_disables_optimizer_for_int8_plus_fp16(tmp_path):
    both = _smpler_like(tmp_path / "qdq_fp16.onnx", qdq=True, fp16=True)
    t = graph_traits(onnx.load(str(both)))
    assert t["qdq"] and t["fp16"]
    s = OnnxRuntimeSession(both)
    assert s.optimization == "disable"
    out = s.infer(np.zeros((1, 3, CROP_SIZE, CROP_SIZE), np.float32))
    assert np.allclose(out.vertices, 1.0)  # 0 through Q/DQ, + 1 from the fp16 constant
    assert OnnxRuntimeSession(both, optimization="basic").optimization == "basic"  # explicit choice wins
    for qdq, fp16 in ((True, False), (False, True)):
        p = _smpler_like(tmp_path / f"q{int(qdq)}_h{int(fp16)}.onnx", qdq=qdq, fp16=fp16)
        assert OnnxRuntimeSession(p).optimization == "all"


@pytest.mark.parametrize("precision,smpler", [("fp16", True), ("fp32", False)])
def test_int8_from_existing_graph_refuses_non_fp32_or_foreign(tmp_path, precision, smpler):
    from smpler_deploy.export.onnx_export import export_onnx
    from smpler_deploy.precision import Precision
    from tiny_smpler import tiny_smpler_onnx

    src = tmp_path / "g.onnx"
    tiny_smpler_onnx(src, precision=precision, smpler=smpler)
    with pytest.raises(SmplerError) as e:
        export_onnx(tmp_path / "q.onnx", precision=Precision.parse("int8"), fp32_graph=src, progress=False)
    assert str(src) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "q.onnx").exists()
