"""Artifacts are checked before they are trusted: an engine against its manifest before Triton serves it, a kernel
directory's index (schema, entries, checksums) before smpler-check-gpu vouches for it, a dataset's values (not
only its shapes) before a benchmark reports metrics on it. Each refusal is one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aot_layout import write_kernel_dir

from smpler_deploy.errors import SmplerError


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- engines served by Triton


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real TensorRT-RTX engine (SM89, batch 1:2:8) of a tiny graph with SMPLer's I/O at 224x224, and its manifest."""
    pytest.importorskip("tensorrt_rtx")
    import tiny_smpler

    from smpler_deploy.engine.builder import build_engine
    from smpler_deploy.engine.options import EngineOptions

    hw, tiny_smpler.HW = tiny_smpler.HW, 224
    try:
        graph = tiny_smpler.tiny_smpler_onnx(tmp_path_factory.mktemp("g") / "tiny224.onnx")
    finally:
        tiny_smpler.HW = hw
    path = tmp_path_factory.mktemp("e") / "tiny.engine"
    build_engine(graph, path, EngineOptions(flavour="tensorrt-rtx", sms=[89], batch=[1, 2, 8]), log=lambda *_: None)
    return path


@pytest.mark.parametrize("damage", ["truncated", "empty", "replaced"])
def test_triton_repository_refuses_an_engine_its_manifest_does_not_describe(engine, tmp_path, capsys, damage):
    """Before, `--format triton --engine` copied a truncated or zero-byte engine as model.plan and exited 0."""
    from smpler_deploy.cli.export import main

    bad = tmp_path / "bad.engine"
    data = engine.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                     "replaced": bytes(b ^ 1 for b in data)}[damage])
    bad.with_name("bad.engine.json").write_bytes(engine.with_name("tiny.engine.json").read_bytes())
    assert main(["--format", "triton", "--engine", str(bad), "-o", str(tmp_path / "repo")]) == 2
    err = _one_error_line(capsys)
    assert f"--engine {bad}: sha256 differs from its manifest bad.engine.json (corrupt, truncated or replaced " \
           "engine" in err
    if damage != "replaced":
        assert f"{len(bad.read_bytes())} bytes, the manifest says {len(data)}" in err
    assert not (tmp_path / "repo").exists()


def test_triton_repository_takes_the_engine_its_manifest_describes(engine, tmp_path):
    from smpler_deploy.serve.repository import write_repository

    write_repository(tmp_path / "repo", engine=engine)
    assert (tmp_path / "repo/smpler_trt/1/model.plan").read_bytes() == engine.read_bytes()


# ---------------------------------------------------------------- kernel directories


def _index(kdir) -> dict:
    return json.loads((kdir / "index.json").read_text())


def _local_fp32(idx) -> dict:
    return next(e for e in idx["kernels"] if e["kernel"] == "local_attention" and e["dtype"] == "fp32")


def _break(kdir, how: str) -> str:
    """Damage the directory one way; returns what the one-line error must say."""
    idx = _index(kdir)
    e = _local_fp32(idx)
    where = "local_attention (fp32) sm_89"
    if how == "not json":
        (kdir / "index.json").write_text('{"format": 2, "kernels": [')
        return "unreadable kernel index"
    if how == "kernels not a list":
        idx["kernels"] = {"local_attention": e}
        want = "field kernels is not a list of objects"
    elif how == "sm a string":
        e["sm"] = "89"
        want = 'kernels[0].sm is "89", expected an integer'
    elif how == "shared a string":
        e["shared"] = "lots"
        want = f'{where}: field shared is "lots", expected a non-negative integer'
    elif how == "bad checksum text":
        e["ptx_sha256"] = "abc"
        want = f'{where}: field ptx_sha256 is "abc", expected a sha256'
    elif how == "no entry name":
        del e["entry_name"]
        want = f"{where}: no field entry_name"
    elif how == "other arguments":
        e["args"] = e["args"][1:]
        want = f"{where}: argument list or constants differ from this smpler-deploy's kernel ABI"
    elif how == "unknown kernel":
        e["kernel"] = "softmax"
        want = "softmax (fp32) sm_89: not a kernel variant smpler-aot builds"
    elif how == "listed twice":
        idx["kernels"].append(dict(e))
        want = f"{where} is listed twice"
    elif how == "other abi":
        idx["kernel_abi"] = 99
        want = "kernels have ABI 99"
    elif how == "no kernels":
        idx["kernels"] = []
        want = "lists no kernels"
    elif how == "binary missing":
        (kdir / e["ptx"]).unlink()
        return f"{kdir / e['ptx']}: cannot read (No such file or directory)"
    elif how == "binary changed":
        (kdir / e["cubin"]).write_bytes(b"CUBIN replaced")
        return f"{kdir / e['cubin']}: checksum differs from index.json"
    (kdir / "index.json").write_text(json.dumps(idx))
    return want


BREAKS = ["not json", "kernels not a list", "sm a string", "shared a string", "bad checksum text", "no entry name",
          "other arguments", "unknown kernel", "listed twice", "other abi", "no kernels", "binary missing",
          "binary changed"]


def test_kernel_dir_verification_accepts_what_smpler_aot_writes(tmp_path):
    """The checks hold smpler-aot's real output (Triton compiled here, no GPU), not only the layout above."""
    from smpler_deploy.plugins import aot
    from smpler_deploy.plugins.kernel_store import verify_kernel_dir

    index = aot.build(tmp_path / "k", [89])  # in a child process when this one runs the Triton interpreter
    assert verify_kernel_dir(tmp_path / "k") == index and len(index["kernels"]) == 4


@pytest.mark.parametrize("how", BREAKS)
def test_kernel_dir_verification_refuses_a_broken_index(tmp_path, how):
    from smpler_deploy.plugins.kernel_store import verify_kernel_dir

    kdir = write_kernel_dir(tmp_path / "k")
    assert verify_kernel_dir(kdir) == _index(kdir)  # as smpler-aot writes it: accepted
    want = _break(kdir, how)
    with pytest.raises(SmplerError) as e:
        verify_kernel_dir(kdir)
    msg = str(e.value)
    assert want in msg and "\n" not in msg and "smpler-aot" in msg, msg


@pytest.mark.parametrize("how", ["shared a string", "binary changed", "no entry name"])
def test_check_gpu_refuses_a_broken_kernel_dir_before_any_work(tmp_path, capsys, how):
    """Before, `smpler-check-gpu --kernel-dir` accepted any index.json that existed (exit 0, steps skipped)."""
    from smpler_deploy.cli.check_gpu import main

    kdir = write_kernel_dir(tmp_path / "k")
    want = _break(kdir, how)
    assert main(["--device", "cpu", "--kernel-dir", str(kdir), "--out", str(tmp_path / "report")]) == 2
    assert want in _one_error_line(capsys)
    assert not (tmp_path / "report").exists()


# ---------------------------------------------------------------- datasets


@pytest.fixture
def dataset(tmp_path):
    from smpler_deploy.bench.dataset import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path, n=3, dataset="3dpw")


def _rewrite(path, **arrays):
    z = dict(np.load(path))
    z.update(arrays)
    out = path.with_name("bad.npz")
    with open(out, "wb") as f:
        np.savez(f, **z)
    return out


def _nan_at(a, i):
    a = np.array(a, np.float32)
    a.reshape(len(a), -1)[i, 0] = np.nan
    return a


@pytest.mark.parametrize("key, value, want", [
    ("bbox", lambda z: _nan_at(z["bbox"], 1), "bbox has NaN or Inf values in 1 of 3 samples (first: 1)"),
    ("joints3d", lambda z: _nan_at(z["joints3d"], 2), "joints3d has NaN or Inf values in 1 of 3 samples (first: 2)"),
    ("pose", lambda z: np.where(np.arange(72) == 5, np.inf, z["pose"]), "pose has NaN or Inf values in 3 of 3"),
    ("betas", lambda z: _nan_at(z["betas"], 0), "betas has NaN or Inf values in 1 of 3 samples (first: 0)"),
    ("bbox", lambda z: z["bbox"].astype(str), "bbox is [3, 4] of <U"),
    ("imgname", lambda z: np.array("images/3dpw_0000.png"), "imgname is 'images/3dpw_0000.png', expected a [N] "
                                                             "array of"),
    ("imgname", lambda z: np.array([b"\xff\xfe", b"a", b"b"]), "imgname is [3] of |S2, expected a [N] array of"),
    ("dataset", lambda z: np.array(["3dpw", "h36m"]), "dataset is [2] of <U4, expected one of h36m, 3dpw"),
    ("box_margin", lambda z: np.array([1.0, 2.0]), "box_margin is [2] of float64, expected one positive number"),
    ("box_margin", lambda z: np.array(np.nan), "box_margin is nan, expected one positive number"),
    ("gender", lambda z: np.array(["n"]), "gender has 1 entries, imgname 3"),
])
def test_dataset_values_are_checked_not_only_shapes(dataset, tmp_path, key, value, want):
    """Before: NaN ground truth gave "–" metrics with no reason, a NaN box was reported as `--bbox`, and strings
    where numbers belong (or a 0-d imgname) were tracebacks."""
    from smpler_deploy.bench.dataset import load_dataset

    bad = _rewrite(dataset, **{key: value(dict(np.load(dataset)))})
    with pytest.raises(SmplerError) as e:
        load_dataset(bad, tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"dataset {bad}: ") and want in msg and "\n" not in msg, msg


def test_bench_names_the_dataset_for_a_nan_box_before_any_baseline(dataset, tmp_path, capsys):
    from smpler_deploy.cli.bench import main

    bad = _rewrite(dataset, bbox=_nan_at(np.load(dataset)["bbox"], 0))
    assert main(["--dataset", str(bad), "--images", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys)
    assert f"--dataset {bad}: bbox has NaN or Inf values" in err and "--bbox" not in err
    assert not (tmp_path / "out").exists()


def test_a_box_outside_its_image_names_the_dataset_sample(tmp_path):
    """A box that lies outside its image is refused when the set is loaded (image headers only, before any
    baseline runs), naming the dataset file and the sample, not the demo's --bbox flag; evaluate() over a set
    loaded without --images says the same before any inference."""
    from smpler_deploy.bench.dataset import evaluate, load_dataset, make_synthetic_dataset

    p = make_synthetic_dataset(tmp_path, n=2, dataset="h36m")
    bad = _rewrite(p, bbox=np.array([np.load(p)["bbox"][0], [5000, 5000, 10, 10]], np.float32))
    want = f"dataset {bad}: bbox[1] (images/h36m_0001.png) 5000,5000,10,10: box lies outside the "
    with pytest.raises(SmplerError) as e:
        load_dataset(bad, tmp_path)
    assert str(e.value).startswith(want) and "--bbox" not in str(e.value)

    class NeverRun:
        def infer(self, x):
            raise AssertionError("the crop is refused before any inference")

    with pytest.raises(SmplerError) as e:
        evaluate(NeverRun(), load_dataset(bad), tmp_path, batch=2)
    assert str(e.value).startswith(want)
