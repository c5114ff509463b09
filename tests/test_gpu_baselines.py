"""GPU baselines decided on CPU: the torch session's device/precision/graph plan, bf16/fp16 fidelity on CPU,
ONNX Runtime provider options, and the GPU benchmark's cell plan. Nothing here needs a GPU; what would run on
one is planned by plain functions tested here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smpler_deploy.errors import SmplerError
from smpler_deploy.runtime.torch_plan import FP32_PARTS, GraphCache, parse_device, plan_torch

HAVE_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAVE_CUDA, reason="asserts the refusal on a machine without CUDA")


# --- torch session plan ------------------------------------------------------------------------------------------

def test_plan_precisions_and_fp32_islands():
    p = plan_torch("cpu", "fp32")
    assert (p.dtype, p.fp32_parts, p.cuda_graphs, p.is_cuda) == ("float32", (), False, False)
    for prec, dt in (("fp16", "float16"), ("bf16", "bfloat16")):
        p = plan_torch("cpu", prec)
        assert p.dtype == dt and p.fp32_parts == FP32_PARTS and "softmax" in p.fp32_parts
    with pytest.raises(SmplerError, match="int8 is a graph precision"):
        plan_torch("cpu", "int8")


def test_plan_cuda_defaults_to_graphs_when_a_device_is_there():
    p = plan_torch("cuda:1", "fp16", cuda_check=lambda: None)  # as on a GPU machine
    assert p.is_cuda and p.cuda_graphs and p.device == "cuda:1"
    assert not plan_torch("cuda", "fp32", cuda_graphs=False, cuda_check=lambda: None).cuda_graphs


@pytest.mark.parametrize("kw, msg", [
    ({"device": "gpu"}, "--device gpu: expected cpu, cuda or cuda:N"),
    ({"device": "cpu", "cuda_graphs": True}, "CUDA graphs need --device cuda"),
    ({"device": "cpu", "precision": "bf16", "attention": "triton"}, "Triton kernels store fp32 or fp16"),
])
def test_plan_refusals(kw, msg):
    with pytest.raises(SmplerError, match=msg):
        plan_torch(**kw)


@no_cuda
def test_cuda_without_cuda_is_one_line():
    with pytest.raises(SmplerError) as e:
        plan_torch("cuda", "fp32")
    text = str(e.value)
    assert "\n" not in text and text.startswith("--device cuda: torch ") and text.endswith("use --device cpu")
    assert parse_device("CUDA:0") == "cuda:0"


@no_cuda
def test_demo_device_cuda_without_cuda_exits_2(tmp_path, capsys):
    from PIL import Image

    from smpler_deploy.cli.demo import main

    img = tmp_path / "p.png"
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(img)
    assert main([str(img), "--device", "cuda", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: torch") and "\n" not in err
    assert not (tmp_path / "o.png").exists()


def test_graph_cache_per_batch_capture_replay_and_fallback():
    g = GraphCache(enabled=True, max_graphs=2)
    assert g.decide(1) == "capture"
    g.captured(1, "g1")
    assert g.decide(1) == "replay" and g.decide(8) == "capture"
    g.captured(8, "g8")
    assert g.decide(4) == "eager"  # over max_graphs: eager, the captured sizes keep replaying
    assert g.decide(8) == "replay"
    g.failed("RuntimeError: operation not permitted when stream is capturing")
    assert g.decide(1) == g.decide(2) == "eager" and not g.graphs
    assert GraphCache(enabled=False).decide(1) == "eager"


# --- fp16 / bf16 for real on CPU ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crops():
    from smpler_deploy.preprocess import heldout_crops

    return heldout_crops(2, 0)[0]


@pytest.fixture(scope="module")
def ref_out(default_model, crops):
    from smpler_deploy.runtime.torch_session import TorchSession

    return TorchSession(default_model).infer(crops)


@pytest.mark.parametrize("precision, mean_mm, max_mm", [("bf16", 5.0, 30.0), ("fp16", 1.0, 5.0)])
def test_half_precisions_on_cpu_keep_fp32_islands(default_model, crops, ref_out, precision, mean_mm, max_mm):
    from smpler_deploy.fidelity import fidelity
    from smpler_deploy.runtime.torch_session import TorchSession

    s = TorchSession(default_model, precision=precision)
    m = s.model
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert m is not default_model and next(default_model.backbone.parameters()).dtype == torch.float32
    assert next(m.backbone.parameters()).dtype == half
    blk = m.transformer[0]
    assert blk.theta_predictor.weight.dtype == torch.float32  # predictors are an fp32 island
    assert m.SMPL_predictor.fc1.weight.dtype == torch.float32  # HMR regressor too
    out = s.infer(crops)
    assert all(a.dtype == np.float32 for a in out)
    f = fidelity(ref_out, out)["vertices"]
    # the half type really computes (not a silent fp32 run), and stays within the policy's budget
    assert 0.001 < f["mean_mm"] < mean_mm and f["max_mm"] < max_mm, f
    assert s.info["precision"] == precision and s.info["fp32_parts"] and not s.info["cuda_graphs"]
    s.close()


# --- ONNX Runtime providers ----------------------------------------------------------------------------------------

def test_provider_options():
    from smpler_deploy.runtime.ort_providers import provider_list, trt_profile_shapes

    assert provider_list("cpu") == ["CPUExecutionProvider"]
    assert provider_list("cuda", device_id=1, stream=1234) == [
        ("CUDAExecutionProvider", {"device_id": "1", "user_compute_stream": "1234"}), "CPUExecutionProvider"]
    trt = provider_list("trt", precision="int8", qdq=True, batches=[8, 1, 4], cache_dir="/c")
    assert [p if isinstance(p, str) else p[0] for p in trt] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = trt[0][1]
    assert opts["trt_profile_min_shapes"] == "images:1x3x224x224"
    assert opts["trt_profile_opt_shapes"] == opts["trt_profile_max_shapes"] == "images:8x3x224x224"
    assert (opts["trt_int8_enable"], opts["trt_fp16_enable"]) == ("True", "False")
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == "/c"
    assert provider_list("tensorrt", trt_fp16=True, cache_dir="/c")[0][1]["trt_fp16_enable"] == "True"
    assert trt_profile_shapes([2])["trt_profile_min_shapes"] == "images:2x3x224x224"


@pytest.mark.parametrize("kw, msg", [
    ({"provider": "tensorrt", "precision": "int8-cpu", "cache_dir": "/c"}, "int8-cpu graph uses ONNX Runtime's"),
    ({"provider": "tensorrt"}, "needs an engine cache directory"),
    ({"provider": "cuda", "trt_fp16": True}, "--trt-fp16: applies to --provider tensorrt"),
    ({"provider": "rocm"}, "--provider rocm: expected one of cpu, cuda, tensorrt"),
])
def test_provider_refusals(kw, msg):
    from smpler_deploy.runtime.ort_providers import provider_list

    with pytest.raises(SmplerError, match=msg):
        provider_list(**kw)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """SMPLer's I/O (224x224 input, the 7 outputs, metadata) around a one-conv network: exports in a second."""
    import tiny_smpler

    path = tmp_path_factory.mktemp("tiny") / "tiny_fp32.onnx"
    old, tiny_smpler.HW = tiny_smpler.HW, 224
    try:
        tiny_smpler.tiny_smpler_onnx(path)
    finally:
        tiny_smpler.HW = old
    return path


def test_missing_provider_is_one_line_listing_available(tmp_path):
    import onnxruntime as ort

    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    avail = ort.get_available_providers()
    for provider, needed in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        if needed in avail:
            continue
        with pytest.raises(SmplerError) as e:
            OnnxRuntimeSession(tmp_path / "not-read.onnx", provider=provider, trt_cache="unused")
        text = str(e.value)
        assert "\n" not in text and needed in text and f"available: {', '.join(avail)}" in text
        assert "onnxruntime-gpu" in text


def test_cpu_provider_with_io_binding_matches_plain_run(tiny_onnx, crops):
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    a = OnnxRuntimeSession(tiny_onnx, provider="cpu", threads=2)
    b = OnnxRuntimeSession(tiny_onnx, provider="cpu", threads=2, io_binding=True)
    assert a.info["providers"] == ["CPUExecutionProvider"] and a.last_device_ms is None
    for x, y in zip(a.infer(crops), b.infer(crops)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("argv, msg", [
    (["--backend", "onnxruntime", "--provider", "tensorrt"], "TensorrtExecutionProvider"),
    (["--backend", "onnxruntime", "--device", "cuda"], "--device: applies to --backend torch"),
    (["--backend", "torch", "--provider", "cuda"], "--provider: applies to --backend onnxruntime"),
    (["--backend", "onnxruntime", "--provider", "cuda", "--trt-fp16"], "--trt-fp16: applies to --provider tensorrt"),
])
def test_demo_provider_flags(tmp_path, capsys, argv, msg):
    import onnxruntime as ort
    from PIL import Image

    from smpler_deploy.cli.demo import main

    if "TensorrtExecutionProvider" in ort.get_available_providers() and msg == "TensorrtExecutionProvider":
        pytest.skip("this onnxruntime has the TensorRT EP")
    img = tmp_path / "p.png"
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(img)
    assert main([str(img), *argv, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err
