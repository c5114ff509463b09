"""smpler-check-gpu's logic on CPU: the whole command on this GPU-less machine (every GPU path skipped with a
reason, report written), the Triton step through the interpreter, TensorRTSession's capture/replay/regrow step on
a real tiny engine through the recording stand-in (the only part that needs a GPU), the runner's budget and
error handling, and the AOT step's launch arguments against the kernel ABI."""

from __future__ import annotations

import json

import pytest
import torch

from smpler_deploy.gpucheck.core import CheckContext, StepResult, run_check
from smpler_deploy.gpucheck.steps import STEP_NAMES, aot_cases, step_trt_session
from smpler_deploy.plugins import kernels as K

HAVE_CUDA = torch.cuda.is_available()


@pytest.mark.skipif(HAVE_CUDA, reason="asserts what a machine without a GPU reports")
def test_whole_check_without_gpu_skips_every_path(tmp_path, capsys):
    from smpler_deploy.cli.check_gpu import main

    out = tmp_path / "reports" / "gpu-check"
    (tmp_path / "reports").mkdir()
    assert main(["--out", str(out)]) == 0
    d = json.loads((out / "report.json").read_text())
    assert d["schema"] == "smpler-deploy/gpu-check" and d["device"] == "cuda" and d["cuda"] != "usable"
    assert [s["name"] for s in d["steps"]] == list(STEP_NAMES)
    for s in d["steps"]:
        assert s["status"] == "skipped" and "no usable CUDA device" in s["reason"], s
    assert d["counts"] == {"executed": 0, "skipped": len(STEP_NAMES), "failed": 0}
    md = (out / "report.md").read_text()
    assert "| smpler-engines | skipped | no usable CUDA device" in md
    assert not list(out.glob(".*"))  # atomic writes: no temp or lock files left
    assert "0 executed, 7 skipped, 0 failed" in capsys.readouterr().out


@pytest.mark.skipif(not K.triton_interprets(), reason="needs the Triton interpreter (CPU)")
def test_interpret_mode_runs_the_triton_step(tmp_path):
    from smpler_deploy.cli.check_gpu import main

    out = tmp_path / "r"
    assert main(["--out", str(out), "--device", "cpu", "--interpret", "--steps", "triton-jit-vs-torch,model-cuda-vs-cpu"]) == 0
    steps = {s["name"]: s for s in json.loads((out / "report.json").read_text())["steps"]}
    t = steps["triton-jit-vs-torch"]
    assert t["status"] == "executed", t["reason"]
    assert t["numbers"]["local fp32 max_abs"] < 2e-4 and t["numbers"]["global fp16 max_abs"] < 2e-2
    assert "interpreter" in t["numbers"]["mode"]
    assert steps["model-cuda-vs-cpu"]["status"] == "skipped" and "--device cpu" in steps["model-cuda-vs-cpu"]["reason"]


@pytest.mark.parametrize("argv, msg", [
    (["--interpret"], "--interpret: runs the Triton kernels on CPU tensors"),
    (["--steps", "nope"], "--steps nope: expected some of model-cuda-vs-cpu"),
    (["--name", "a/b"], "--name a/b: expected letters"),
    (["--budget-s", "0"], "--budget-s 0"),
])
def test_cli_refusals(tmp_path, capsys, argv, msg):
    from smpler_deploy.cli.check_gpu import main

    assert main(argv + (["--out", str(tmp_path / "r")] if "--name" not in argv else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_runner_budget_and_errors():
    calls = []

    def ok(ctx):
        calls.append("ok")
        return StepResult("x", "executed", numbers={"a": 1.0})

    def boom(ctx):
        raise RuntimeError("cudaErrorIllegalAddress\nsecond line")

    ctx = CheckContext(device="cpu")
    ctx.deadline = __import__("time").monotonic() + 5
    res = run_check([("ok", ok, 0), ("boom", boom, 0), ("big", ok, 60)], ctx)
    assert [(r.name, r.status) for r in res] == [("ok", "executed"), ("boom", "failed"), ("big", "skipped")]
    assert res[1].reason == "RuntimeError: cudaErrorIllegalAddress" and "time budget" in res[2].reason
    assert calls == ["ok"]
    with pytest.raises(ValueError, match="needs a reason"):
        StepResult("y", "skipped")


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """The check's tiny SMPLer-shaped graph, built for real by TensorRT-RTX for SM 89 (no GPU needed)."""
    pytest.importorskip("tensorrt_rtx")
    from smpler_deploy.engine.builder import build_engine
    from smpler_deploy.engine.options import EngineOptions
    from smpler_deploy.gpucheck.tiny_graph import write_tiny_graph

    d = tmp_path_factory.mktemp("tiny")
    onnx_path = write_tiny_graph(d / "tiny_fp32.onnx")
    engine = d / "tiny_fp32.engine"
    build_engine(onnx_path, engine, EngineOptions(flavour="tensorrt-rtx", sms=[89], batch=[1, 1, 4], tf32=False),
                 log=lambda m: None)
    return onnx_path, engine


def test_tiny_graph_has_smpler_io(tiny_engine, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    s = OnnxRuntimeSession(tiny_engine[0])  # refuses any graph without SMPLer's input and 7 outputs
    out = s.infer(np.zeros((2, 3, 224, 224), np.float32))
    assert out.vertices.shape == (2, 6890, 3) and out.rotmat.shape == (2, 24, 3, 3)
    assert "CPUExecutionProvider" in ort.get_available_providers()


def _as_full_tensorrt(engine, tmp_path):
    """The same real plan with a manifest saying full TensorRT (whose sessions capture CUDA graphs by hand)."""
    import shutil

    from smpler_deploy.trt.manifest import read_manifest, write_manifest

    copy = shutil.copy(engine, tmp_path / engine.name)
    m = read_manifest(engine)
    m["trt"]["flavour"] = "tensorrt"
    write_manifest(copy, m)
    return copy


def test_trt_session_step_capture_replay_regrow(tiny_engine, tmp_path):
    """Recording stand-in for the GPU calls; engine file and manifest are the real TensorRT-RTX build."""
    from trt_standin import RecordingCudaStandIn

    api = RecordingCudaStandIn(device_sm=89)
    ctx = CheckContext(device="cuda", trt_api=api, iters=3, cache={"tiny_engine": tiny_engine[1]})
    r = step_trt_session(ctx)
    assert r.status == "executed", r.reason
    n = r.numbers
    assert n["captured_b1"] and n["captured_b4"] and n["regrew"] and n["kept_buffers_on_smaller_batch"]
    assert n["replay_b1_device_ms_p50"] == 1.5 and n["flavour"] == "tensorrt-rtx"  # the stand-in's event time
    assert n["cuda_graphs"].startswith("TensorRT-RTX runtime") and "begin_capture" not in api.names()
    assert api.names()[-1] == "release" and not api.live_device and not api.live_host  # all freed on close
    # full TensorRT: trtexec-style capture, replays, re-capture at the larger batch
    api = RecordingCudaStandIn(device_sm=89, flavour="tensorrt")
    ctx = CheckContext(device="cuda", trt_api=api, iters=3,
                       cache={"tiny_engine": _as_full_tensorrt(tiny_engine[1], tmp_path)})
    r = step_trt_session(ctx)
    assert r.status == "executed", r.reason
    names = api.names()
    assert names.count("begin_capture") == 2 and names.count("graph_launch") >= 3 + 2  # b1 replays, b4 capture
    assert names[-1] == "release" and not api.live_device and not api.live_host  # all freed on close


def test_trt_session_step_reports_a_failed_capture(tiny_engine, tmp_path):
    from trt_standin import RecordingCudaStandIn

    ctx = CheckContext(device="cuda", trt_api=RecordingCudaStandIn(device_sm=89, fail_capture=True, flavour="tensorrt"),
                       iters=2, cache={"tiny_engine": _as_full_tensorrt(tiny_engine[1], tmp_path)})
    r = step_trt_session(ctx)
    assert r.status == "failed" and "no CUDA graph captured at batch 1 (RuntimeError: execute_async_v3 returned False" in r.reason


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_aot_step_launches_match_the_kernel_abi(dtype):
    """The AOT step's arguments (as the plugin's enqueue derives them from descriptors) plan cleanly against index
    entries built from the ABI module, at SMPLer's sizes."""
    import numpy as np

    from smpler_deploy.plugins.abi import HIDDEN_ARGS, plan_launch, variant_spec

    for c in aot_cases(dtype):
        spec = variant_spec(c["kernel"], c["store"])
        entry = {"kernel": c["kernel"], "constexprs": spec["constexprs"], "threads_per_block": 128, "shared": 0,
                 "args": [{"name": n, "type": t} for n, t in spec["args"]] + [{"name": h, "type": "*i8"} for h in HIDDEN_ARGS]}
        ptrs = [256 * (i + 1) for i in range(len(c["arrays"]) + 1)]
        plan = plan_launch(entry, [d.dims for d in c["descs"]], ptrs)
        assert c["store"] == dtype and not plan.empty
        assert [a.dtype for a in c["arrays"]][0] == np.dtype({"fp32": np.float32, "fp16": np.float16}[dtype])
        assert plan.grid == ((2 * 24, 1, 1) if c["kind"] == "local" else (4, 2, 4))  # B*J; cdiv(26*4,32), B, scales
        assert tuple(c["out_shape"]) == tuple(c["ref"].shape)


def test_tensorrt_rtx_on_a_datacenter_gpu_is_a_skip_reason(monkeypatch):
    """TensorRT-RTX (the only TensorRT here) cannot target sm_90: the engine steps say so instead of failing."""
    pytest.importorskip("tensorrt_rtx")
    from smpler_deploy.gpucheck import steps
    from smpler_deploy.trt import cuda_mem
    from smpler_deploy.trt.importer import import_trt

    if import_trt(None)[1] != "tensorrt-rtx":
        pytest.skip("full TensorRT installed")
    monkeypatch.setattr(cuda_mem, "device_sm", lambda device=None: 90)
    why = steps.trt_for_this_gpu()
    assert isinstance(why, str) and "does not target sm_90" in why and "smpler-deploy[trt]" in why
    monkeypatch.setattr(cuda_mem, "device_sm", lambda device=None: 89)
    assert steps.trt_for_this_gpu()[1:] == ("tensorrt-rtx", 89)
