"""smpler-bench --official-repo: the official repository's own forward as a baseline cell, on a STAND-IN checkout
(tests/data/official_standin: the official file names, SMPLer(args, trans_cfg) constructor and per-stage output
dicts; its forward moves every vertex by 1 mm so the comparison has something to measure)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from smpler_deploy import SmplerError
from smpler_deploy.bench.official_repo import build_official_model
from smpler_deploy.cli.bench import main
from smpler_deploy.model.smpler import SMPLer

STANDIN = Path(__file__).resolve().parent / "data" / "official_standin"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A user's checkpoint in the official layout (seeded weights, the generated stand-in body model)."""
    from smpler_deploy.body.standin import make_standin_body_model

    torch.manual_seed(0)
    model = SMPLer("smpler")
    model.smpl_handler.set_body_model(make_standin_body_model())
    path = tmp_path_factory.mktemp("ckpt") / "smpler_w32.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def _bench(args, out):
    return main(["--backends", "torch", "--precisions", "fp32", "--batch", "1", "--iters", "1", "--warmup", "0",
                 "--threads", "2", "--no-progress", "--no-plots", "--out", str(out), *args])


@pytest.mark.slow  # three model loads and forwards (~3 min on the shared 2-core machine)
def test_official_repo_cell_is_the_baseline_and_is_compared_in_mm(checkpoint, tmp_path):
    out = tmp_path / "report"
    assert _bench(["--official-repo", str(STANDIN), "--checkpoint", str(checkpoint)], out) == 0
    rep = json.loads((out / "report.json").read_text())
    cells = {c["id"]: c for c in rep["cells"]}
    off = cells["official-repo/fp32/b1"]
    assert off["status"] == "ok" and off["kind"] == "official-repo", off["reason"]
    v = off["fidelity"]["vertices"]
    assert v["mean_mm"] == pytest.approx(1.0, abs=1e-3) and v["max_mm"] == pytest.approx(1.0, abs=1e-3)
    ok = [c for c in rep["cells"] if c["status"] == "ok"]
    assert {c["speedup_baseline"] for c in ok} == {"official-repo/fp32/b1"}
    assert cells["torch-reference/fp32/b1"]["speedup_vs_reference"] == pytest.approx(1.0)
    staged = rep["model"]["official_repo"]["staged_files"]  # what the official paths were given
    assert "stand-in" in staged["meta_data/basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"]
    md = (out / "report.md").read_text()
    assert "Speed-ups divide by `official-repo/fp32/b1`" in md
    assert "our transcription `torch-official/fp32/b1` costs" in md


def test_missing_dependencies_are_named_in_one_line(tmp_path, capsys):
    repo = tmp_path / "checkout"
    shutil.copytree(STANDIN, repo)
    basics = repo / "models" / "transformer_basics.py"
    basics.write_text("import opendr.renderer\nfrom psbody.mesh import Mesh\n" + basics.read_text())
    assert _bench(["--official-repo", str(repo)], tmp_path / "report") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "--official-repo" in err[0] and "opendr, psbody" in err[0]
    assert not (tmp_path / "report" / "report.json").exists()


def test_not_a_checkout_is_refused(tmp_path, capsys):
    assert _bench(["--official-repo", str(tmp_path)], tmp_path / "report") != 0
    err = capsys.readouterr().err.strip()
    assert "not the official SMPLer repository (no models/smpler.py" in err and "\n" not in err


def test_state_dict_is_loaded_strictly(checkpoint):
    sd = torch.load(checkpoint, weights_only=True)["model"]
    model, info = build_official_model(STANDIN, "smpler", sd)
    assert not model.training and info["hrnet_type"] == "w32"
    del sd["transformer.2.cam_predictor.bias"]
    with pytest.raises(SmplerError, match=r"does not load strictly.*transformer\.2\.cam_predictor\.bias"):
        build_official_model(STANDIN, "smpler", sd)
