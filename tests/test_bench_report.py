"""Benchmark plumbing from synthetic cells: stats, report schema, markdown, plots, argument parsing."""

import json

import numpy as np
import pytest

from smpler_deploy.bench import runner as R
from smpler_deploy.bench.machine import library_versions, machine_info
from smpler_deploy.bench.report import SCHEMA_VERSION, Cell, Report, render_markdown, validate_report, write_report
from smpler_deploy.bench.stats import latency_stats
from smpler_deploy.errors import SmplerError
from smpler_deploy.precision import Precision


def test_latency_stats():
    s = latency_stats([0.010, 0.020, 0.030, 0.040, 0.100], batch=4)
    assert (s.min_ms, s.max_ms, s.p50_ms) == pytest.approx((10, 100, 30))
    assert s.mean_ms == pytest.approx(40) and s.throughput_ips == pytest.approx(100)
    assert s.p90_ms == pytest.approx(76) and s.p99_ms == pytest.approx(97.6)  # linear interpolation
    with pytest.raises(SmplerError):
        latency_stats([], 1)


def synthetic_report(untrained=True):
    rng = np.random.default_rng(0)
    model = {"variant": "smpler", "untrained": untrained, "standin_body": untrained, "gflops_per_image": 18.785}
    rep = Report(model=model, settings={"iters": 5, "warmup": 1, "threads": 2, "inputs": {"description": "test"}},
                 machine=machine_info(2, measure_gemm=False) | {"gemm_fp32_peak_gflops": 100.0})
    fid = {"vertices": {"mean_mm": 0.4, "max_mm": 1.6}, "joints": {"pa_mean_mm": 0.1}}
    for batch in (1, 8):
        for kind, be, pr, scale in (("official", "torch", "fp32", 3.0), ("reference", "torch", "fp32", 2.0),
                                    ("deployed", "onnxruntime", "fp16", 1.0)):
            rep.cells.append(Cell(be, pr, batch, kind, latency=latency_stats(rng.uniform(0.1, 0.2, 5) * scale * batch,
                                                                             batch).to_dict(),
                                  fidelity=fid, peak_rss_mb=900.0))
        rep.cells.append(Cell("tensorrt", "fp16", batch, status="skipped", reason="no CUDA GPU"))
    return rep


def test_report_files_schema_and_markdown(tmp_path):
    paths = write_report(synthetic_report(), tmp_path / "r")
    d = json.loads(paths["json"].read_text())
    assert validate_report(d)["schema_version"] == SCHEMA_VERSION
    ids = [c["id"] for c in d["cells"]]
    assert "torch-official/fp32/b1" in ids and "tensorrt/fp16/b8" in ids  # skipped cells are kept
    off = next(c for c in d["cells"] if c["id"] == "torch-official/fp32/b8")
    ort = next(c for c in d["cells"] if c["id"] == "onnxruntime/fp16/b8")
    assert off["speedup_vs_official"] == pytest.approx(1.0)
    assert ort["speedup_vs_official"] == pytest.approx(ort["latency"]["throughput_ips"] / off["latency"]["throughput_ips"])
    assert ort["achieved_gflops"] == pytest.approx(18.785 * ort["latency"]["throughput_ips"])
    md = paths["md"].read_text()
    assert "**untrained**" in md and "**stand-in**" in md
    assert "| tensorrt/fp16/b1 | skipped | no CUDA GPU |" in md
    assert "0.4 / 1.6" in md and "% of GEMM peak" in md and "100.0 GFLOP/s" in md
    for p in paths["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_banner_when_trained():
    d = synthetic_report(untrained=False).finalize().to_dict()
    assert "Note:" not in render_markdown(d)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d.pop("cells"), "missing key 'cells'"),
    (lambda d: d.update(schema_version=99), "expected smpler-deploy/bench-report v1"),
    (lambda d: d["cells"][0].pop("latency"), "latency"),
    (lambda d: d["cells"][3].update(reason=None), "needs a reason"),
    (lambda d: d.update(cells=[c for c in d["cells"] if c["kind"] != "official"]), "no 'official' baseline"),
])
def test_schema_rejects(mutate, msg):
    d = synthetic_report().finalize().to_dict()
    mutate(d)
    with pytest.raises(SmplerError, match=msg):
        validate_report(d)


def test_parsing_errors(tmp_path):
    assert R.parse_batches("8,1,8") == [1, 8]
    assert R.parse_choices("torch, onnxruntime", R.BACKENDS, "--backends") == ["torch", "onnxruntime"]
    for bad in ("", "1,x", "0", "1;8"):
        with pytest.raises(SmplerError, match="^batch "):
            R.parse_batches(bad)
    with pytest.raises(SmplerError, match="unknown fp64"):
        R.parse_precisions("fp32,fp64", "--precisions")
    assert R.parse_precisions("int8-cpu,bf16,int8-cpu") == [Precision("int8", "cpu"), Precision("bf16")]
    f16 = tmp_path / "smpler_fp16.onnx"
    f16.write_bytes(b"x")
    with pytest.raises(SmplerError, match="not a readable ONNX model"):  # a plain path: precision from metadata
        R.parse_artifacts(f"{f16}", "--onnx")
    assert R.parse_artifacts(f"int8={f16}", "--onnx") == {Precision("int8", "trt"): f16}
    with pytest.raises(SmplerError, match="file not found"):
        R.parse_artifacts(str(tmp_path / "missing.onnx"), "--onnx")


def test_plan_skips_and_names_missing_artifacts(tmp_path):
    cfg = R.BenchConfig(backends=["torch", "onnxruntime", "tensorrt"], precisions=["fp32", "int8"], batches=[1, 8])
    groups = R.plan(cfg)
    kinds = [(g.backend, g.precision.name, g.kind) for g in groups]
    assert kinds[:2] == [("torch", "fp32", "reference"), ("torch", "fp32", "official")]
    reasons = {(g.backend, g.precision.name): g.reason for g in groups}
    assert "runs fp32, fp16, bf16" in reasons[("torch", "int8")]
    if not R.gpu_available():
        assert "no CUDA GPU" in reasons[("tensorrt", "fp32")]
    assert all(len(g.cells) == 2 for g in groups)
    f = tmp_path / "m_fp32.onnx"
    f.write_bytes(b"x")
    cfg = R.BenchConfig(backends=["onnxruntime"], precisions=["fp32", "fp16"], onnx={"fp32": f})
    with pytest.raises(SmplerError, match="cell onnxruntime/fp16"):
        R.plan(cfg)


def test_cli_bad_input_exits_2(capsys, tmp_path):
    from smpler_deploy.cli.bench import main

    for argv, msg in ((["--backends", "cuda"], "--backends"), (["--precisions", "fp64"], "--precisions"),
                      (["--batch", "1,a"], "--batch"), (["--engine", "nope.engine"], "nope.engine"),
                      (["--dataset", str(tmp_path / "x.npz"), "--images", str(tmp_path)], "x.npz")):
        assert main(argv + ["--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err


def test_machine_info_fields(monkeypatch):
    import importlib
    import importlib.util

    from smpler_deploy.bench import machine

    libs = library_versions()
    assert set(libs) >= {"torch", "onnxruntime", "numpy", "tensorrt", "tensorrt_rtx", "triton"}
    for key, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("onnx", "onnx"),
                        ("tensorrt_rtx", "tensorrt_rtx"), ("triton", "triton")):
        # the version recorded is the one of the installed package that would be imported, or None without it
        if importlib.util.find_spec(module) is None:
            assert libs[key] is None, key
        else:
            assert libs[key] == importlib.import_module(module).__version__, key
    monkeypatch.setattr(machine, "LIBRARIES", {"absent": ("no-such-distribution-c2b",), "numpy": ("nope", "numpy")})
    assert library_versions() == {"absent": None, "numpy": np.__version__}  # the first distribution found wins
    m = machine_info(1, measure_gemm=True)
    assert m["gemm_fp32_peak_gflops"] > 0 and m["usable_cores"] >= 1


def test_dataset_format_and_errors(tmp_path):
    from smpler_deploy.bench.dataset import load_dataset, make_synthetic_dataset

    p = make_synthetic_dataset(tmp_path, n=3, dataset="3dpw")
    ds = load_dataset(p, tmp_path)
    assert ds.name == "3dpw" and len(ds) == 3 and ds.protocol == ("MPVE", "MPJPE", "PA-MPJPE")
    z = dict(np.load(p))
    z.pop("pose")
    z.pop("betas")
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(SmplerError, match="missing keys pose, betas"):
        load_dataset(tmp_path / "bad.npz")
    (tmp_path / z["imgname"][1]).unlink()
    with pytest.raises(SmplerError, match="1 of 3 images missing"):
        load_dataset(p, tmp_path)


def test_cells_over_the_fidelity_gate_are_flagged(tmp_path):
    """smpler-bench marks cells whose vertex error exceeds smpler-export's default int8 --max-error-mm."""
    from smpler_deploy.fidelity import INT8_LIMITS_MM, check_gate, gate_limits

    rep = synthetic_report()
    bad = {"finite": True, "vertices": {"mean_mm": INT8_LIMITS_MM[0] * 2, "max_mm": 10.0}, "joints": {}}
    for pr, fid in (("int8-cpu", bad), ("int8", {"finite": True, "vertices": {"mean_mm": 1.0, "max_mm": 5.0}})):
        c = Cell("onnxruntime", pr, 1, latency=latency_stats([0.1, 0.1], 1).to_dict(), fidelity=fid)
        c.fidelity_gate = check_gate(fid, gate_limits(None, pr))
        rep.cells.append(c)
    d = json.loads(write_report(rep, tmp_path / "r", plots=False)["json"].read_text())
    gates = {c["id"]: c["fidelity_gate"] for c in d["cells"]}
    assert "exceeds" in gates["onnxruntime/int8-cpu/b1"] and gates["onnxruntime/int8/b1"] is None
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**over gate**" in md and "Over the fidelity gate" in md and "- onnxruntime/int8-cpu/b1: vertex error" in md
    assert md.count("**over gate**") == 1
