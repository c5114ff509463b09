"""smpler-bench checks its destination and every --onnx/--engine artifact before any baseline runs."""

from __future__ import annotations

import os

import pytest

from smpler_deploy.cli.bench import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tiny_smpler import tiny_smpler_onnx

    d = tmp_path_factory.mktemp("art")
    out = {"fp32": tiny_smpler_onnx(d / "fp32.onnx"), "foreign": tiny_smpler_onnx(d / "f.onnx", smpler=False),
           "int8cpu": tiny_smpler_onnx(d / "c.onnx", "int8", "cpu")}
    try:
        from smpler_deploy.engine.builder import build_engine
        from smpler_deploy.engine.options import EngineOptions

        build_engine(out["fp32"], d / "fp32.engine", EngineOptions(batch="1:1:2"), log=lambda *_: None)
        out["engine"] = d / "fp32.engine"
        (d / "bare.engine").write_bytes(b"no manifest beside me")
        out["bare"] = d / "bare.engine"
    except ImportError:
        pass
    return out


@pytest.fixture
def no_baselines(monkeypatch):
    import smpler_deploy.bench.runner as R

    def refuse(*a, **k):
        raise AssertionError("a baseline ran before the artifacts were checked")

    monkeypatch.setattr(R, "run_benchmark", refuse)


def _fail(capsys, argv, *names):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert rc == 2 and len(lines) == 1, err
    for n in names:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("spec,precisions,names", [
    ("fp16={fp32}", "fp16", ["--onnx fp16=", "carries precision fp32; pass it as fp32="]),
    ("{foreign}", "fp32", ["--onnx", "not an SMPLer graph"]),
    ("int8={int8cpu}", "int8", ["carries precision int8-cpu"]),
    ("{int8cpu}", "int8-cpu", None),  # a plain path takes its precision from the metadata: accepted as int8-cpu
])  # fmt: skip
def test_onnx_artifacts_checked_first(tmp_path, capsys, files, no_baselines, spec, precisions, names):
    out = tmp_path / "report"
    argv = ["--onnx", spec.format(**files), "--backends", "onnxruntime", "--precisions", precisions,
            "--out", str(out)]
    if names is None:
        with pytest.raises(AssertionError, match="a baseline ran"):  # got past every check
            main(argv)
    else:
        _fail(capsys, argv, *names)
    assert not out.exists()


def test_engine_artifacts_checked_first(tmp_path, capsys, files, no_baselines):
    if "engine" not in files:
        pytest.skip("no TensorRT flavour to build the test engine")
    out = tmp_path / "report"
    trt = ["--backends", "tensorrt", "--precisions"]
    _fail(capsys, ["--engine", f"fp16={files['engine']}", *trt, "fp16", "--out", str(out)], "--engine fp16=",
          "carries precision fp32")
    _fail(capsys, ["--engine", f"fp32={files['bare']}", *trt, "fp32", "--out", str(out)], "no manifest bare.engine.json")
    _fail(capsys, ["--engine", f"fp32={files['engine']}", *trt, "fp32", "--variant", "smpler-l", "--out", str(out)],
          "a smpler engine, but the benchmark is --variant smpler-l")
    assert not out.exists()


def test_out_checked_first(tmp_path, capsys, no_baselines):
    f = tmp_path / "file"
    f.write_text("x")
    _fail(capsys, ["--out", str(f)], "--out", "exists and is not a directory")
    _fail(capsys, ["--out", str(tmp_path / "missing" / "report")], "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_batch_outside_the_engine_profile_is_a_failed_cell(files, monkeypatch):
    """The engine (a real TensorRT-RTX build, profile 1..2) cannot run here (no GPU): the real TensorRTSession
    runs it over the recording CUDA stand-in. Batch 4 is refused as a failed cell, the in-profile batch still
    runs, nothing aborts the matrix."""
    if "engine" not in files:
        pytest.skip("no TensorRT flavour to build the test engine")
    import numpy as np
    from tqdm import tqdm
    from trt_standin import RecordingCudaStandIn

    import smpler_deploy.bench.runner as R
    from smpler_deploy.bench.report import Cell
    from smpler_deploy.runtime.tensorrt import TensorRTSession
    from smpler_deploy.runtime.trt_plan import Profile

    api = RecordingCudaStandIn(profile=Profile((1, 3, 224, 224), (1, 3, 224, 224), (2, 3, 224, 224)))
    monkeypatch.setattr(R, "_open", lambda cfg, g: TensorRTSession(g.artifact, api=api))
    cfg = R.BenchConfig(backends=["tensorrt"], batches=[1, 4], iters=1, warmup=1)
    g = R.Group("tensorrt", "fp32", "deployed", [Cell("tensorrt", "fp32", b) for b in (1, 4)],
                 artifact=files["engine"])
    R._run_groups(cfg, [g], np.zeros((4, 3, 224, 224), np.float32), {}, tqdm(disable=True))
    ok, out = g.cells
    assert ok.status == "ok" and ok.latency["iters"] == 1
    assert out.status == "failed" and out.reason == "batch 4 is outside the engine's profile 1..2 (rebuild with --batch)"
    shapes = [c[2] for c in api.calls if c[0] == "set_input_shape"]
    assert shapes and {s[0] for s in shapes} == {1}  # batch 4 never reached the engine
    assert api.names().count("execute_async") + api.names().count("graph_launch") == 2  # warm-up + 1 iteration
