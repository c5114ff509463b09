"""End to end on the real model (untrained default, stand-in body): a tiny benchmark with a dataset evaluation,
and the demo on a scikit-image photo. One bench run is shared (module fixture) to stay within the time budget."""

import json
import shutil

import numpy as np
import pytest

from smpler_deploy.bench.dataset import evaluate, load_dataset, make_synthetic_dataset
from smpler_deploy.bench.report import validate_report


def _bench(root, *extra):
    from smpler_deploy.cli.bench import main

    ds = make_synthetic_dataset(root / "data", n=2, dataset="h36m")
    out = root / "report"
    rc = main(["--backends", "torch,onnxruntime,tensorrt", "--precisions", "fp32", "--batch", "1", "--iters", "2",
               "--warmup", "1", "--threads", "2", "--no-progress", "--dataset", str(ds), "--images",
               str(root / "data"), "--out", str(out), *extra])
    return rc, out


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, onnx_fp32):
    """The bench's ONNX cell reads the graph its cache directory holds, as on a second run: the session's fp32
    graph (what the bench would export there: same model, batch profile 1:1:8). test_bench_exports_into_its_cache
    runs the export itself."""
    root = tmp_path_factory.mktemp("bench")
    cache = root / "cache"
    cache.mkdir()
    shutil.copyfile(onnx_fp32, cache / "smpler_fp32.onnx")
    return _bench(root, "--cache-dir", str(cache))


def test_bench_report(bench_run):
    rc, out = bench_run
    assert rc == 0
    d = validate_report(json.loads((out / "report.json").read_text()))
    cells = {c["id"]: c for c in d["cells"]}
    for cid in ("torch-official/fp32/b1", "torch-reference/fp32/b1", "onnxruntime/fp32/b1"):
        assert cells[cid]["status"] == "ok", cells[cid]["reason"]
        assert cells[cid]["latency"]["iters"] == 2 and cells[cid]["peak_rss_mb"] > 0
    assert cells["torch-reference/fp32/b1"]["fidelity"]["vertices"]["max_mm"] == 0
    ort = cells["onnxruntime/fp32/b1"]
    assert ort["fidelity"]["vertices"]["max_mm"] < 0.5  # same fp32 graph: float round-off only
    assert ort["speedup_vs_official"] > 0 and ort["achieved_gflops"] > 0
    assert set(ort["dataset_metrics"]) >= {"MPJPE", "PA-MPJPE", "samples"}
    assert "official" not in (cells["torch-official/fp32/b1"]["dataset_metrics"] or {})
    assert d["model"]["untrained"] and d["model"]["standin_body"]
    md = (out / "report.md").read_text()
    assert "**untrained**" in md and "onnxruntime/fp32/b1" in md and "## Dataset: h36m" in md
    if cells["tensorrt/fp32/b1"]["status"] == "skipped":
        assert "| tensorrt/fp32/b1 | skipped |" in md
    assert (out / "latency.png").is_file() and (out / "speedup_vs_fidelity.png").is_file()


@pytest.mark.slow  # a second fp32 export (~1-2 min on the shared 2-core machine); bench_run reuses the session's
def test_bench_exports_into_its_cache(tmp_path):
    """Without --onnx and with an empty cache the bench exports the graph its ONNX cell needs into OUT/cache."""
    rc, out = _bench(tmp_path)
    assert rc == 0
    cells = {c["id"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert cells["onnxruntime/fp32/b1"]["status"] == "ok", cells["onnxruntime/fp32/b1"]["reason"]
    assert cells["onnxruntime/fp32/b1"]["fidelity"]["vertices"]["max_mm"] < 0.5
    assert (out / "cache" / "smpler_fp32.onnx").is_file()


def test_dataset_eval_matches_metrics(tmp_path):
    """evaluate() over a stub session equals the metrics computed by hand on the same outputs."""
    from smpler_deploy import metrics as M
    from smpler_deploy.outputs import SMPLOutput

    p = make_synthetic_dataset(tmp_path, n=3, dataset="h36m", seed=3)
    ds = load_dataset(p, tmp_path)
    rng = np.random.default_rng(0)
    preds = rng.normal(size=(3, 14, 3)) * 0.3

    class Stub:
        i = 0

        def infer(self, x):
            b = len(x)
            j = preds[self.i:self.i + b]
            self.i += b
            z = np.zeros
            return SMPLOutput(z((b, 6890, 3)), j, z((b, 24, 3)), z((b, 24, 2)), z((b, 24, 3, 3)), z((b, 10)), z((b, 3)))

    res = evaluate(Stub(), ds, tmp_path, batch=2)
    assert res["samples"] == 3
    assert res["MPJPE"] == pytest.approx(M.mpjpe(preds, ds.joints3d).mean())
    assert res["PA-MPJPE"] == pytest.approx(M.pa_mpjpe(preds, ds.joints3d).mean())


def test_demo_writes_overlay_and_mesh(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from smpler_deploy.cli.demo import main
    from mesh_files import ply_counts

    img = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(img)
    out = tmp_path / "o" / "overlay.png"
    assert main([str(img), "--out", str(out)]) == 2  # the output directory must exist: checked before any work
    assert "does not exist" in capsys.readouterr().err
    out.parent.mkdir()
    assert main([str(img), "--bbox", "100,20,300,480", "--threads", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert np.asarray(Image.open(out)).shape == (512, 512, 3)
    assert ply_counts(out.with_suffix(".ply")) == (6890, 13776)
    obj = out.with_suffix(".obj").read_text()
    assert obj.count("\nv ") == 6890 and obj.count("\nf ") == 13776
    assert "stand-in" in capsys.readouterr().out
    assert main([str(img), "--bbox", "600,0,50,50", "--out", str(out), "--force"]) == 2  # box outside the image
    assert "outside" in capsys.readouterr().err
    assert main([str(tmp_path / "none.png"), "--out", str(out), "--force"]) == 2
