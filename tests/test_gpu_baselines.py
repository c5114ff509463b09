"""GPU baselines decided on CPU: the torch session's device/precision/graph plan, bf16/fp16 fidelity on CPU,
ONNX Runtime provider options, and the GPU benchmark's cell plan. Nothing here needs a GPU; what would run on
one is planned by plain functions tested here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smpler_deploy.errors import SmplerError
from smpler_deploy.precision import Precision
from smpler_deploy.runtime.torch_plan import FP32_PARTS, parse_device, plan_torch

HAVE_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAVE_CUDA, reason="asserts the refusal on a machine without CUDA")


# --- torch session plan ------------------------------------------------------------------------------------------

def test_plan_precisions_and_fp32_islands():
    p = plan_torch("cpu", "fp32")
    assert (p.dtype, p.fp32_parts, p.cuda_graphs, p.is_cuda) == ("float32", (), False, False)
    for prec, dt in (("fp16", "float16"), ("bf16", "bfloat16")):
        p = plan_torch("cpu", prec)
        assert p.dtype == dt and p.fp32_parts == FP32_PARTS and "softmax" in p.fp32_parts
        assert p.precision == Precision(prec) and plan_torch("cpu", Precision(prec)) == p  # typed or spelled
    with pytest.raises(SmplerError, match="int8 is a graph precision"):
        plan_torch("cpu", "int8")
    with pytest.raises(SmplerError, match="int8-cpu is a graph precision"):
        plan_torch("cpu", Precision("int8", "cpu"))


def test_plan_cuda_defaults_to_graphs_when_a_device_is_there():
    p = plan_torch("cuda:1", "fp16", cuda_check=lambda: None)  # as on a GPU machine
    assert p.is_cuda and p.cuda_graphs and p.device == "cuda:1"
    assert not plan_torch("cuda", "fp32", cuda_graphs=False, cuda_check=lambda: None).cuda_graphs


@pytest.mark.parametrize("kw, msg", [
    ({"device": "gpu"}, "^device gpu: expected cpu, cuda or cuda:N"),
    ({"device": "cpu", "cuda_graphs": True}, "^cuda_graphs: CUDA graphs need `device` cuda"),
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
    assert "\n" not in text and text.startswith("device cuda: torch ") and text.endswith("use `device` cpu")
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


# --- fp16 / bf16 for real on CPU ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crops():
    from smpler_deploy.preprocess import heldout_crops

    return heldout_crops(2, 0)[0]


@pytest.fixture(scope="module")
def ref_out(default_model, crops):
    from smpler_deploy.runtime.torch_session import TorchSession

    return TorchSession(default_model).infer(crops[:1])  # one crop: half types run slowly on CPU


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
    out = s.infer(crops[:1])
    assert all(a.dtype == np.float32 for a in out)
    f = fidelity(ref_out, out)["vertices"]
    # the half type really computes (not a silent fp32 run), and stays within the policy's budget
    assert 0.001 < f["mean_mm"] < mean_mm and f["max_mm"] < max_mm, f
    assert s.precision == Precision(precision) and s.info.fp32_parts == FP32_PARTS and s.cuda_graphs.mode == "off"
    s.close()


# --- ONNX Runtime providers ----------------------------------------------------------------------------------------

def test_provider_options():
    from smpler_deploy.runtime.ort_providers import provider_list, trt_profile_shapes

    assert provider_list("cpu") == ["CPUExecutionProvider"]
    assert provider_list("cuda", device_id=1, stream=1234) == [
        ("CUDAExecutionProvider", {"device_id": "1", "user_compute_stream": "1234"}), "CPUExecutionProvider"]
    trt = provider_list("trt", precision=Precision.parse("int8"), qdq=True, batches=[8, 1, 4], cache_dir="/c")
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
    ({"provider": "tensorrt", "precision": Precision.parse("int8-cpu"), "cache_dir": "/c"}, "int8-cpu graph uses ONNX Runtime's"),
    ({"provider": "tensorrt"}, "needs an engine cache directory"),
    ({"provider": "cuda", "trt_fp16": True}, "^trt_fp16: applies to `provider` tensorrt"),
    ({"provider": "rocm"}, "^provider rocm: expected one of cpu, cuda, tensorrt"),
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
    assert a.info.providers == ("CPUExecutionProvider",) and a.last_device_ms is None
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


# --- smpler-bench --device cuda: cell plan ----------------------------------------------------------------------

GPU_ENV = dict(cuda=None, ort_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
               tensorrt=True)


def _plan(env=GPU_ENV, **kw):
    from smpler_deploy.bench import runner as R

    cfg = R.BenchConfig(**{"backends": ["torch", "onnxruntime", "tensorrt"], "precisions": ["fp32", "fp16"],
                           "batches": [1, 8], **kw})
    return R.plan(cfg, R.BenchEnv(**env))


def test_cuda_plan_puts_every_cell_on_the_gpu(tmp_path):
    eng = {"fp32": tmp_path / "a.engine", "fp16": tmp_path / "b.engine"}
    groups = _plan(device="cuda", engines=eng, cache_dir=tmp_path)
    by = {(g.backend, g.precision.name, g.kind): g for g in groups}
    assert [k for k in by][:2] == [("torch", "fp32", "reference"), ("torch", "fp32", "official")]
    for key in (("torch", "fp32", "reference"), ("torch", "fp32", "official"), ("torch", "fp16", "deployed")):
        assert by[key].kw["device"] == "cuda" and by[key].kw["cuda_graphs"] is False  # eager
    for pr in ("fp32", "fp16"):
        g = by[("torch-cudagraph", pr, "deployed")]
        assert g.runtime == "torch" and g.kw == {"device": "cuda", "cuda_graphs": True, "precision": Precision.parse(pr)}
        assert by[("onnxruntime-cuda", pr, "deployed")].kw["provider"] == "cuda"
        trt = by[("onnxruntime-tensorrt", pr, "deployed")]
        assert trt.kw["trt_cache"] == tmp_path / "ort-trt" and trt.kw["batches"] == (1, 8)
        assert by[("tensorrt", pr, "deployed")].artifact == eng[pr]
    assert all(g.reason is None for g in groups)
    assert not any(g.backend == "onnxruntime" for g in groups)  # no CPU provider cell in a GPU report
    assert all([c.batch for c in g.cells] == [1, 8] for g in groups)


def test_cuda_plan_skips_what_is_not_installed():
    env = dict(GPU_ENV, ort_providers=["CPUExecutionProvider"], tensorrt=False)
    groups = _plan(env, device="cuda", precisions=["fp32", "int8-cpu", "bf16"])
    why = {(g.backend, g.precision.name): g.reason for g in groups}
    assert "CUDAExecutionProvider not available" in why[("onnxruntime-cuda", "fp32")]
    assert "available: CPUExecutionProvider" in why[("onnxruntime-cuda", "fp32")]
    assert "TensorRT refuses" in why[("onnxruntime-tensorrt", "int8-cpu")]
    assert "TensorRT Python package not installed" in why[("tensorrt", "fp32")]
    assert "torch precision" in why[("onnxruntime-cuda", "bf16")]
    assert why[("torch", "bf16")] is None and why[("torch-cudagraph", "bf16")] is None
    assert "graph precision" in why[("torch", "int8-cpu")]


def test_cpu_plan_never_runs_gpu_cells():
    groups = _plan(device="cpu", precisions=["fp32", "bf16"])
    why = {(g.backend, g.precision.name): g.reason for g in groups}
    assert "measure it with --device cuda" in why[("tensorrt", "fp32")]
    assert not any(g.backend.startswith("torch-cudagraph") or g.kw.get("device") == "cuda" for g in groups)
    assert [g.kw for g in groups if g.runtime == "onnxruntime"] == [{"provider": "cpu"}] * 2
    assert why[("torch", "bf16")] is None  # bf16 runs on CPU too
    no_gpu = _plan(dict(GPU_ENV, cuda="no CUDA GPU"), device="cpu")
    assert "no CUDA GPU" in {g.backend: g.reason for g in no_gpu}["tensorrt"]


@pytest.mark.parametrize("kw, env, msg", [
    ({"device": "cuda"}, dict(GPU_ENV, cuda="torch 2.13.0+cpu is a CPU-only build"), "^device cuda: torch 2.13.0+cpu"),
    ({"device": "cuda", "providers": ["cpu"]}, GPU_ENV, "^provider cpu: a CPU provider with `device` cuda"),
    ({"device": "cpu", "providers": ["cuda"]}, GPU_ENV, "^provider cuda: a GPU provider with `device` cpu"),
    ({"device": "cuda", "providers": ["cuda"], "trt_fp16": True}, GPU_ENV, "^trt_fp16: applies to the tensorrt"),
    ({"device": "tpu"}, GPU_ENV, "^device tpu: expected one of cpu, cuda"),
])
def test_plan_refusals_are_one_line(kw, env, msg):
    with pytest.raises(SmplerError, match=msg.replace("+", r"\+")):
        _plan(env, **kw)


@no_cuda
def test_bench_cli_device_cuda_without_cuda(tmp_path, capsys):
    from smpler_deploy.cli.bench import main

    assert main(["--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: torch") and "\n" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_report_ratio_uses_the_same_device_official_cell():
    """The speed-up column divides by the official-style cell of the report, which the plan puts on the report's
    device; a GPU report's markdown says so."""
    from smpler_deploy.bench.report import Cell, Report, render_markdown

    lat = lambda ms: {"iters": 2, "batch": 1, "min_ms": ms, "mean_ms": ms, "p50_ms": ms, "p90_ms": ms,  # noqa: E731
                      "p95_ms": ms, "p99_ms": ms, "max_ms": ms, "throughput_ips": 1000 / ms}
    cells = [Cell("torch", "fp32", 1, "official", latency=lat(20.0)), Cell("torch", "fp32", 1, "reference", latency=lat(10.0)),
             Cell("torch-cudagraph", "fp16", 1, latency=lat(4.0), device_latency=lat(3.0), device_memory_mb=300.0)]
    rep = Report(model={"variant": "smpler", "untrained": True, "standin_body": True}, machine={},
                 settings={"device": "cuda", "providers": ["cuda"], "device_memory_method": "delta"}, cells=cells)
    d = rep.finalize().to_dict()
    assert [c["speedup_vs_official"] for c in d["cells"]] == [1.0, 2.0, 5.0]
    md = render_markdown(d)
    assert "device: cuda — every cell, baselines included, ran there" in md and "Device memory: delta" in md
    assert "| torch-cudagraph/fp16/b1 | 3.00 |" in md


def test_compile_flag_wraps_the_model_lazily(default_model):
    """--compile hands the forward to torch.compile (static shapes); compilation itself happens at the first call
    (minutes on this 2-core CPU, so not run here)."""
    from smpler_deploy.runtime.torch_session import TorchSession

    s = TorchSession(default_model, compile=True)
    assert isinstance(s._forward, torch._dynamo.eval_frame.OptimizedModule) and s.info.compiled
    assert s._forward._orig_mod is s.model
    assert TorchSession(default_model)._forward is default_model


def test_torch_session_device_guard_index():
    """The device TorchSession makes current around construction, capture, replay and the event timer: cuda:N
    (torch.cuda.graph captures on a side stream of the *current* device, so a session on cuda:1 without the guard
    captured an empty graph); plain cuda is device 0; the CPU needs no guard."""
    from smpler_deploy.runtime.torch_plan import plan_torch

    assert plan_torch("cuda:1", cuda_check=lambda: None).cuda_index == 1
    assert plan_torch("cuda", cuda_check=lambda: None).cuda_index == 0
    assert plan_torch("cpu").cuda_index is None
