"""Which baseline every speed-up divides by (the official repository's forward when it ran, else our
transcription), speed-ups vs our reference, and int8 cells held against a measured int8 GEMM peak."""

import time

import numpy as np
import pytest

from smpler_deploy.bench.machine import gemm_int8_rates, refresh_gemm_peaks
from smpler_deploy.bench.report import Cell, Report, render_markdown
from smpler_deploy.outputs import SMPLOutput
from smpler_deploy.runtime.base import Session

MODEL = {"variant": "smpler", "untrained": True, "standin_body": True, "gflops_per_image": 18.785}


def _cell(kind, batch, ms, backend="torch", precision="fp32"):
    lat = {k: ms for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")}
    lat |= {"iters": 1, "batch": batch, "std_ms": 0.0, "throughput_ips": batch * 1000.0 / ms}
    return Cell(backend, precision, batch, kind, latency=lat)


def _report(cells, machine=None):
    rep = Report(model=dict(MODEL), settings={}, machine=machine or {}, cells=cells).finalize()
    return rep, render_markdown(rep.to_dict())


def test_speedups_divide_by_the_official_repository_where_it_ran():
    repo1, ours1, ref1 = _cell("official-repo", 1, 400.0), _cell("official", 1, 440.0), _cell("reference", 1, 400.0)
    ort1 = _cell("deployed", 1, 200.0, backend="onnxruntime")
    ours8, ref8 = _cell("official", 8, 3000.0), _cell("reference", 8, 2500.0)
    ort8 = _cell("deployed", 8, 1000.0, backend="onnxruntime")
    rep = Report(model=dict(MODEL, official_repo={"repo": "/src/SMPLer", "commit": "0ee16de121af0f4ea75f"}),
                 settings={}, machine={}, cells=[repo1, ours1, ref1, ort1, ours8, ref8, ort8]).finalize()
    md = render_markdown(rep.to_dict())
    assert ort1.speedup_baseline == "official-repo/fp32/b1" and ort1.speedup_vs_official == pytest.approx(2.0)
    assert ort1.speedup_vs_reference == pytest.approx(2.0)
    assert ours1.speedup_vs_official == pytest.approx(400 / 440)  # the transcription against the official code
    assert ort8.speedup_baseline == "torch-official/fp32/b8" and ort8.speedup_vs_official == pytest.approx(3.0)
    assert ort8.speedup_vs_reference == pytest.approx(2.5)
    assert "Speed-ups divide by `official-repo/fp32/b1`, `torch-official/fp32/b8`" in md
    assert "batch 1: our transcription `torch-official/fp32/b1` costs 1.10× the official code" in md
    assert "(mean 440.0 vs 400.0 ms; p50 1.10×)" in md
    assert "--official-repo `/src/SMPLer` at commit 0ee16de121af)" in md  # which official code was timed


def test_without_the_official_repository_the_transcription_is_named():
    ort = _cell("deployed", 1, 200.0, backend="onnxruntime")
    _, md = _report([_cell("official", 1, 400.0), _cell("reference", 1, 400.0), ort])
    assert ort.speedup_baseline == "torch-official/fp32/b1"
    assert "our official-style transcription of the official forward; pass --official-repo" in md


def test_int8_cpu_cells_share_of_the_int8_peak():
    machine = {"gemm_fp32_peak_gflops": 100.0, "gemm_int8_peak_gops": 400.0}
    int8 = _cell("deployed", 1, 200.0, backend="onnxruntime", precision="int8-cpu")  # 93.9 GFLOP/s nominal
    fp32 = _cell("deployed", 1, 200.0, backend="onnxruntime")
    _, md = _report([_cell("official", 1, 400.0), _cell("reference", 1, 400.0), int8, fp32], machine)
    row = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| onnxruntime/")}
    assert "93.9 (23% of int8)" in row["| onnxruntime/int8-cpu/b1"]
    assert "93.9 (94%)" in row["| onnxruntime/fp32/b1"]
    assert "measured int8 GEMM peak (u8s8, what int8-cpu cells run): 400.0 GOP/s" in md


def test_int8_gemm_peak_is_measured():
    rates = gemm_int8_rates(threads=1, n=256, seconds=0.05)
    assert rates["onnxruntime"] > 0


def test_gemm_peaks_are_the_best_of_before_and_after_the_cells():
    """A peak measured in a slow spell (here: an impossibly low one) is replaced by the second window's; a higher
    earlier rate is kept. Without a first measurement (--no-gemm) nothing is measured."""
    slow = {"gemm_fp32_peak_gflops": 0.001, "gemm_fp32_gflops_by_library": {"torch": 0.001},
            "gemm_int8_peak_gops": 1e9, "gemm_int8_gops_by_library": {"onnxruntime": 1e9}}
    m = refresh_gemm_peaks(slow, threads=1, n=256, seconds=0.05)
    assert m["gemm_fp32_gflops_by_library"]["torch"] > 0.001 and m["gemm_fp32_peak_gflops"] > 0.001
    assert m["gemm_int8_peak_gops"] == 1e9 and "before and after the cells" in m["gemm_method"]
    unmeasured = {"gemm_fp32_peak_gflops": None, "gemm_fp32_gflops_by_library": {}}
    assert refresh_gemm_peaks(dict(unmeasured), threads=1, n=256, seconds=0.05) == unmeasured


class _SharedHost(Session):
    """Stand-in session on a host whose load comes and goes: a call costs 1 ms, 5 ms while `host["loaded"]` calls
    of all sessions together remain (a neighbour that finishes part-way through the baselines). Every session
    computes the same, so any difference between their times is when they ran."""

    def __init__(self, kind, host):
        self.where, self.host = f"{kind} stand-in", host
        self.repo_info = {"repo": "stand-in", "commit": None}

    def _run(self, images):
        self.host["loaded"] -= 1
        # tens of milliseconds: a busy machine (the other test workers) delays a wake-up by a millisecond or two
        time.sleep(0.05 if self.host["loaded"] >= 0 else 0.01)
        b = len(images)
        return SMPLOutput(np.zeros((b, 6890, 3), np.float32), np.zeros((b, 14, 3), np.float32),
                          np.zeros((b, 24, 3), np.float32), np.zeros((b, 24, 2), np.float32),
                          np.broadcast_to(np.eye(3, dtype=np.float32), (b, 24, 3, 3)).copy(),
                          np.zeros((b, 10), np.float32), np.zeros((b, 3), np.float32))


def test_baselines_are_timed_together_so_a_passing_load_slows_them_alike(monkeypatch, tmp_path):
    """Reference, transcription and official repository compute the same here; a load lasting the first 9 of
    their 21 calls must not make one of them look 3-5x dearer (one after another, the first took it all)."""
    import smpler_deploy.bench.runner as R

    host = {"loaded": 9}
    monkeypatch.setattr(R, "_open", lambda cfg, g: _SharedHost(g.kind, host))
    cfg = R.BenchConfig(backends=["torch"], precisions=["fp32"], batches=[1], iters=6, warmup=1, progress=False,
                        measure_gemm=False, official_repo=tmp_path)
    rep = R.run_benchmark(cfg).finalize()
    means = {c.kind: c.latency["mean_ms"] for c in rep.cells}
    assert sorted(means) == ["official", "official-repo", "reference"]
    assert max(means.values()) / min(means.values()) < 1.3, means
    assert "timed together at each batch, one call of each per round" in render_markdown(rep.to_dict())
