"""Plain runtime and build decisions: shapes, buffers, graph policy, dtypes, option parsing, layer dump parsing."""

import numpy as np
import pytest

from smpler_deploy.engine.builder import parse_mem_pool_size, profile_shapes, sm_to_major_minor
from smpler_deploy.engine.targets import check_sms
from smpler_deploy.outputs import parse_batch
from smpler_deploy.engine.layer_summary import (
    find_layers_dump,
    format_layer_summary,
    parse_layers,
    precision_warning,
    summarize,
)
from smpler_deploy.errors import OptionError, SmplerError
from smpler_deploy.runtime.graphs import GraphState
from smpler_deploy.runtime.torch_plan import torch_graph_policy
from smpler_deploy.runtime.trt_plan import (
    Profile,
    TensorSpec,
    buffers_to_grow,
    nbytes,
    plan_input_shape,
    trt_graph_policy,
)
from smpler_deploy.trt.dtypes import dtype_name, np_dtype

SPEC = TensorSpec("images", True, np.dtype(np.float32), (-1, 3, 224, 224))
PROFILE = Profile((1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224))


def test_dtype_mapping():
    """One map for the runtime's buffers and the manifest's names: bf16/fp8 are named but have no numpy type."""
    assert np_dtype("FLOAT") == np.float32 and np_dtype("DataType.HALF") == np.float16
    assert np_dtype("INT8") == np.int8 and np_dtype("INT64") == np.int64 and np_dtype("BOOL") == np.bool_
    with pytest.raises(SmplerError, match="BF16 has no numpy equivalent"):
        np_dtype("BF16")
    assert dtype_name("DataType.HALF") == "float16" and dtype_name("BF16") == "bfloat16"
    assert dtype_name("FP8") == "float8e4m3" and dtype_name("INT4") == "int4"


def test_input_shape_planning():
    assert plan_input_shape((8, 3, 224, 224), SPEC, PROFILE) == (8, 3, 224, 224)
    with pytest.raises(SmplerError, match=r"outside the engine's profile \(batch min 1, opt 2, max 8\)"):
        plan_input_shape((9, 3, 224, 224), SPEC, PROFILE, "a.engine")
    with pytest.raises(SmplerError, match=r"expects shape \[-1, 3, 224, 224\]"):
        plan_input_shape((1, 3, 256, 256), SPEC, PROFILE)


def test_buffer_plan_grow_only():
    assert nbytes((2, 3, 224, 224), np.float32) == 2 * 3 * 224 * 224 * 4
    needed = {"images": 100, "vertices": 50}
    assert buffers_to_grow({}, needed) == needed
    assert buffers_to_grow({"images": 100, "vertices": 80}, needed) == {}  # smaller batch: reuse
    assert buffers_to_grow({"images": 60, "vertices": 80}, needed) == {"images": 100}


def test_graph_policy():
    """TensorRT's policy: one graph keyed by (shapes, addresses), captured after the warm-up, dropped on a key
    change (the released graph is handed back for destruction), off for good after a failed capture."""
    p = trt_graph_policy(warmup=2)
    k1, k2 = ((1,), (("a", 1),)), ((2,), (("a", 1),))
    for _ in range(2):
        assert p.decide(k1).action == "run"
        p.ran(k1)
    assert p.decide(k1).action == "capture"
    p.captured(k1, "g1")
    assert p.decide(k1) == ("replay", ()) and p.state == GraphState("capture", 1)
    d = p.decide(k2)  # shape change: release, restart warm-up
    assert d == ("run", ("g1",)) and p.state.captured == 0
    p.ran(k2)
    assert p.decide(k2) == ("run", ())
    p.ran(k2)
    assert p.decide(k2).action == "capture"
    p.captured(k2, "g2")
    assert p.failed("capture unsupported") == ("g2",)
    assert p.decide(k2) == ("run", ()) and p.decide(k1) == ("run", ())
    assert p.state == GraphState("capture", 0, "capture unsupported")
    off = trt_graph_policy(enabled=False)
    assert off.decide(k1).action == "run" and off.state == GraphState("off", 0)
    with pytest.raises(ValueError):
        trt_graph_policy(warmup=0)


def test_torch_graph_policy_per_batch_capture_replay_and_fallback():
    """The torch session's use of the same policy: a graph per batch size, captured at once (its capture warms up
    on a side stream), at most max_graphs (other sizes eager, the captured ones keep replaying), never replaced."""
    g = torch_graph_policy(enabled=True, max_graphs=2)
    assert g.decide(1) == ("capture", ())
    g.captured(1, "g1")
    assert g.decide(1).action == "replay" and g.decide(8).action == "capture"
    g.captured(8, "g8")
    assert g.decide(4) == ("run", ())  # over max_graphs: eager, nothing released
    assert g.decide(8).action == "replay" and g.state == GraphState("capture", 2)
    assert set(g.failed("RuntimeError: operation not permitted when stream is capturing")) == {"g1", "g8"}
    assert g.decide(1) == g.decide(2) == ("run", ()) and g.state.captured == 0
    assert torch_graph_policy(enabled=False).decide(1) == ("run", ())


def test_option_parsing():
    assert parse_mem_pool_size("workspace:2G") == {"WORKSPACE": 2 << 30}
    assert parse_mem_pool_size("workspace:1024,tacticSharedMem:48K") == {"WORKSPACE": 1 << 30,
                                                                          "TACTIC_SHARED_MEMORY": 48 << 10}  # fmt: skip
    assert parse_mem_pool_size(None) == {}
    with pytest.raises(SmplerError, match="^mem_pool_size gpu:2G: expected POOL:SIZE"):
        parse_mem_pool_size("gpu:2G")
    assert parse_batch("1:4:8") == (1, 4, 8) and parse_batch(4) == (4, 4, 4) and parse_batch((1, 1, 8)) == (1, 1, 8)
    for bad in ("8:1:1", "0:1:1", "a:b:c", "1:2"):
        with pytest.raises(OptionError, match=f"^batch {bad}: ") as e:  # the library names the field, not a flag
            parse_batch(bad)
        assert e.value.field == "batch" and e.value.named("--batch").startswith(f"--batch {bad}: ")
    valid = [75, 80, 86, 89, 120, 121]
    assert check_sms(["89", 8.6, "sm_120", 89], valid) == [89, 86, 120]
    with pytest.raises(SmplerError, match=r"^sms 90: not a TensorRT-RTX target; valid: 75, 80, 86, 89, 120, 121"):
        check_sms([90], valid)
    assert sm_to_major_minor(89) == (8, 9) and sm_to_major_minor(120) == (12, 0)
    assert profile_shapes(["B", 3, 224, 224], (1, 2, 8), "images")["max"] == [8, 3, 224, 224]
    with pytest.raises(SmplerError, match="fixed batch of 1"):
        profile_shapes([1, 3, 224, 224], (1, 2, 8), "images")
    with pytest.raises(SmplerError, match="only the batch dimension may be dynamic"):
        profile_shapes(["B", 3, "H", "W"], (1, 1, 1), "images")


# Trimmed lines of a real TensorRT-RTX 1.7 `Layers:` dump (int8 Q/DQ conv net, SM89), as Polygraphy relays it.
DUMP = """[X] Layers:
    Name: __mye235_0_myl0_0, LayerType: shape_call, Inputs: [], Constants: [], Outputs: [], TacticName: , StreamId: 0, Metadata:
    Name: /c1/Conv_myl0_2, LayerType: correlation, Inputs: [ { Name: a, Dimensions: [-1,4,64,64], Strides: [16384,1,256,4], StrideOrder: [3,0,2,1], Datatype: Int8, Format: (NHWC) Channel major format }], Constants: [ { Name: w, Dimensions: [16,4,3,3], Strides: [36,1,12,4], StrideOrder: [3,0,2,1], Datatype: Int8, Format: (NHWC) Channel major format }, { Name: s, Dimensions: [1,16,1,1], Strides: [16,1,16,16], StrideOrder: [3,0,2,1], Datatype: Float, Format: (NHWC) Channel major format }], Outputs: [ { Name: o, Dimensions: [-1,16,32,32], Strides: [16384,1,512,16], StrideOrder: [3,0,2,1], Datatype: Float, Format: (NHWC) Channel major format }], TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: /c1/Conv][ONNX Layer: images_DequantizeLinear][ONNX Layer: c1.weight_DequantizeLinear]
    Name: __myl_MulAddRelu_myl0_3, LayerType: kgen, Inputs: [ { Name: o, Dimensions: [-1,16,32,32], Strides: [16384,1,512,16], StrideOrder: [3,0,2,1], Datatype: Float, Format: (NHWC) Channel major format }], Constants: [], Outputs: [ { Name: q, Dimensions: [-1,16,32,32], Strides: [16384,1,512,16], StrideOrder: [3,0,2,1], Datatype: Int8, Format: (NHWC) Channel major format }], TacticName: __myl_MulAddRelu_0x1, StreamId: 0, Metadata: [ONNX Layer: /Relu]
    Name: attn_0, LayerType: custom_layer, Inputs: [ { Name: q, Dimensions: [-1,16], Strides: [16,1], StrideOrder: [1,0], Datatype: Half, Format: (Linear) Row major linear format }], Constants: [], Outputs: [ { Name: y, Dimensions: [-1,16], Strides: [16,1], StrideOrder: [1,0], Datatype: Half, Format: (Linear) Row major linear format }], TacticName: attn_0_7, StreamId: 0, Metadata: [ONNX Layer: attn_0]

    I/O Tensors:
     Name: images, IOMode: Input, DataType: Float, Dimensions: [-1,3,64,64], Location: Device
"""


def test_layers_dump_parsing():
    assert find_layers_dump(["[V] something", DUMP, "[X] Engine generation completed"]) == DUMP
    assert find_layers_dump(["no dump here"]) is None
    recs = parse_layers(DUMP)
    assert [r.kind for r in recs] == ["shape_call", "conv", "kgen", "plugin"]
    conv = recs[1]
    assert conv.inputs == ["int8"] and conv.constants == ["int8", "fp32"] and conv.outputs == ["fp32"]
    assert conv.onnx_layers == ["/c1/Conv", "images_DequantizeLinear", "c1.weight_DequantizeLinear"]
    assert [r.precision for r in recs] == ["none", "int8", "fp32", "fp16"]
    s = summarize(recs)
    assert s["by_kind"]["conv"] == {"int8": 1} and s["by_kind"]["plugin"] == {"fp16": 1} and s["int8_compute"] == 1
    table = format_layer_summary(s)
    assert "conv" in table and "int8" in table and "plugin" in table
    assert precision_warning(s, "int8") is None
    no_int8 = summarize([recs[2]])
    assert "no convolution/GEMM runs in int8" in precision_warning(no_int8, "int8")
    assert "not available" in format_layer_summary(summarize(parse_layers(None)))


def test_layer_records_from_inspector_json():
    """Full TensorRT (on a GPU) reports layers through IEngineInspector's JSON instead of the builder log."""
    import json

    from smpler_deploy.engine.layer_summary import parse_inspector_json, summarize

    sample = {"Layers": [
        {"Name": "/backbone/conv1/Conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "images", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
         "Outputs": [{"Name": "t0", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Weights": {"Type": "Int8", "Count": 1728}, "Metadata": "[ONNX Layer: /backbone/conv1/Conv]",
         "TacticName": "sm80_xmma_fprop"},
        {"Name": "gemm_1", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [{"Name": "a", "Format/Datatype": "Row major linear FP16 format"}],
         "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "plugin_1", "LayerType": "PluginV3",
         "Inputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}], "Outputs": []},
        "a layer listed by name only",
    ]}
    recs = parse_inspector_json(json.dumps(sample))
    assert [(r.kind, r.precision) for r in recs] == [("conv", "int8"), ("gemm", "fp16"), ("plugin", "fp32")]
    assert recs[0].onnx_layers == ["/backbone/conv1/Conv"]
    s = summarize(recs)
    assert s["int8_compute"] == 1 and s["by_precision"] == {"int8": 1, "fp16": 1, "fp32": 1}
    assert parse_inspector_json("not json") == []


def test_engine_and_runtime_modules_import_without_torch_or_triton():
    """The TensorRT side (builder, plugins' creators, runtime) must load where only TensorRT is installed."""
    import subprocess
    import sys

    code = ("import sys, smpler_deploy.engine.builder, smpler_deploy.trt.plugins, smpler_deploy.trt.launch, "
            "smpler_deploy.runtime.tensorrt, smpler_deploy.plugins.kernel_store; "
            "print('torch' in sys.modules, 'triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_graph_policy_per_flavour():
    """tensorrt: manual capture after the warm-up; tensorrt-rtx: the runtime's own CUDA graphs, never a capture."""
    rtx = trt_graph_policy(warmup=1, flavour="tensorrt-rtx")
    assert rtx.runtime and rtx.state.mode == "runtime"
    for _ in range(3):
        assert rtx.decide("k").action == "run"
        rtx.ran("k")
    trt = trt_graph_policy(warmup=1, flavour="tensorrt")
    assert not trt.runtime and trt.decide("k").action == "run"
    trt.ran("k")
    assert trt.decide("k").action == "capture"
    off = trt_graph_policy(enabled=False, flavour="tensorrt-rtx")
    assert not off.runtime and off.state.mode == "off"
