"""Paths inside input files stay inside the file's own folder (ONNX external data, kernel-index binaries, dataset
image names): each escape (absolute, `..`, a symbolic link out) is refused in one line naming the file and the
entry, nothing is read or written outside, and the commands exit non-zero."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from aot_layout import write_kernel_dir

from smpler_deploy.errors import SmplerError


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _tree(root) -> dict:
    """Every path under root with its bytes (files) or None (folders, links): what a refused command must leave."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[p] = None if os.path.islink(p) or os.path.isdir(p) else open(p, "rb").read()
    return out


# ---------------------------------------------------------------- the one check


@pytest.mark.parametrize("entry, why", [
    ("/etc/passwd", "an absolute path"),
    ("../victim/secret.txt", "leaves .* through '..'"),
    ("sub/../../victim/secret.txt", "leaves .* through '..'"),
    ("..\\victim\\secret.txt", "leaves .* through '..'"),
    ("link/secret.txt", "resolves to .*victim/secret.txt, outside"),
    ("", "expected a relative file name"),
])
def test_contained_refuses_every_escape(tmp_path, entry, why):
    from smpler_deploy.containment import contained

    base, victim = tmp_path / "base", tmp_path / "victim"
    base.mkdir(), victim.mkdir()
    (victim / "secret.txt").write_text("secret")
    (base / "link").symlink_to(victim)
    with pytest.raises(SmplerError) as e:
        contained(base, entry, what="f.json: entry")
    msg = str(e.value)
    assert msg.startswith(f"f.json: entry {entry!r}: ") and msg.endswith("; refused") and "\n" not in msg
    assert re.search(why, msg), msg


def test_contained_allows_names_inside(tmp_path):
    from smpler_deploy.containment import contained

    (tmp_path / "sub").mkdir()
    (tmp_path / "w.bin").write_bytes(b"w")
    (tmp_path / "alias.bin").symlink_to(tmp_path / "w.bin")  # a link that stays inside is fine
    assert contained(tmp_path, "sub/x.bin", what="f") == (tmp_path / "sub/x.bin").resolve()
    assert contained(tmp_path, "alias.bin", what="f") == (tmp_path / "w.bin").resolve()


# ---------------------------------------------------------------- ONNX external data


@pytest.fixture(scope="module")
def external_graph(tmp_path_factory):
    """A tiny SMPLer-I/O graph (224x224 input, as the Triton repository checks) with its weights in external data."""
    import onnx
    import tiny_smpler

    hw, tiny_smpler.HW = tiny_smpler.HW, 224
    try:
        path = tiny_smpler.tiny_smpler_onnx(tmp_path_factory.mktemp("ext") / "g.onnx")
    finally:
        tiny_smpler.HW = hw
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="g.onnx.data", size_threshold=1024)
    return path


def _evil_graph(src, folder, location):
    """A copy of `src` in `folder` whose external-data entries all name `location` (set by hand, as a hostile file
    would), with the real weights beside it under their own name."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.with_name("g.onnx.data"), folder / "g.onnx.data")
    m = onnx.load(str(src), load_external_data=False)
    n = 0
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value, n = location, n + 1
    assert n > 0
    onnx.save(m, str(folder / "evil.onnx"))
    return folder / "evil.onnx"


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim"
    v.mkdir()
    (v / "secret.txt").write_bytes(b"not yours\n" * 100)
    return v / "secret.txt"


def _locations(tmp_path, victim):
    """Escaping locations, relative to tmp_path/models: `..`, absolute, and a link inside the folder."""
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "link").symlink_to(victim.parent)
    return {"dotdot": "../victim/secret.txt", "absolute": str(victim), "link": "link/secret.txt",
            "deep": "../../../../../../../../etc/passwd"}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link", "deep"])
def test_triton_repository_refuses_escaping_external_data(external_graph, tmp_path, victim, capsys, kind):
    """`smpler-export --format triton --onnx evil.onnx -o repo`: before, `..` copied a file from outside the graph's
    folder to outside the repository (exit 0) and an absolute location was a SameFileError traceback."""
    from smpler_deploy.cli.export import main

    loc = _locations(tmp_path, victim)[kind]
    evil = _evil_graph(external_graph, tmp_path / "models", loc)
    (tmp_path / "out").mkdir()
    before = _tree(tmp_path)
    assert main(["--format", "triton", "--onnx", str(evil), "-o", str(tmp_path / "out" / "repo")]) == 2
    err = _one_error_line(capsys)
    assert f"--onnx {evil}: external data location {loc!r}" in err and err.endswith("; refused")
    assert _tree(tmp_path) == before  # no repository, nothing copied anywhere


def test_triton_repository_copies_contained_external_data(external_graph, tmp_path):
    """The same graph with its own data file still goes in, weights beside model.onnx (the check refuses only
    escapes)."""
    from smpler_deploy.serve.repository import write_repository

    write_repository(tmp_path / "repo", onnx=external_graph)
    data = tmp_path / "repo/smpler_onnx/1/g.onnx.data"
    assert data.read_bytes() == external_graph.with_name("g.onnx.data").read_bytes()


def test_engine_build_refuses_escaping_external_data_before_tensorrt(external_graph, tmp_path, victim, capsys):
    """`smpler-export --format engine --onnx evil.onnx`: refused by our check, before TensorRT's parser (which
    opens the escaping file) is handed the graph; no engine, manifest or lock left."""
    pytest.importorskip("tensorrt_rtx")
    from smpler_deploy.cli.export import main

    evil = _evil_graph(external_graph, tmp_path / "models", "../victim/secret.txt")
    before = _tree(tmp_path)
    assert main(["--format", "engine", "--onnx", str(evil), "--trt", "tensorrt-rtx", "--sm", "89",
                 "-o", str(tmp_path / "e.engine")]) == 2
    err = _one_error_line(capsys)
    assert f"{evil}: external data location '../victim/secret.txt': leaves" in err
    assert _tree(tmp_path) == before


def test_onnxruntime_session_refuses_escaping_external_data(external_graph, tmp_path, victim):
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    evil = _evil_graph(external_graph, tmp_path / "models", str(victim))
    with pytest.raises(SmplerError, match=rf"^{evil}: external data location '{victim}': an absolute path"):
        OnnxRuntimeSession(evil)  # the library names the file; a command passes where="--onnx PATH"


def test_external_data_in_node_attributes_is_checked_too(tmp_path, victim):
    """Not only initializers: a Constant node's tensor can live in external data as well."""
    import onnx
    from onnx import TensorProto, helper

    from smpler_deploy.containment import onnx_external_files

    t = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../victim/secret.txt")
    node = helper.make_node("Constant", [], ["y"], value=t)
    g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    (tmp_path / "m").mkdir()
    onnx.save(helper.make_model(g), str(tmp_path / "m" / "c.onnx"))
    m = onnx.load(str(tmp_path / "m" / "c.onnx"), load_external_data=False)
    with pytest.raises(SmplerError, match=r"^c.onnx: external data location '../victim/secret.txt': leaves"):
        onnx_external_files(m, tmp_path / "m" / "c.onnx", "c.onnx")


# ---------------------------------------------------------------- kernel index entries


def _edit_index(kdir, **fields):
    """Set (or with None, remove) fields of the local_attention fp32 entry."""
    idx = json.loads((kdir / "index.json").read_text())
    e = next(e for e in idx["kernels"] if e["kernel"] == "local_attention" and e["dtype"] == "fp32")
    for k, v in fields.items():
        if v is None:
            e.pop(k)
        else:
            e[k] = v
    (kdir / "index.json").write_text(json.dumps(idx))


@pytest.mark.parametrize("cubin, why", [("../../../../../../../../etc/passwd", "leaves .* through '..'"),
                                         ("/etc/passwd", "an absolute path"),
                                         ("link/secret.txt", "resolves to .* outside")])
def test_check_gpu_refuses_kernel_index_entries_outside_the_kernel_dir(tmp_path, victim, capsys, cubin, why):
    """`smpler-check-gpu --kernel-dir`: before, `cubin: ../../../../etc/passwd` was resolved outside the kernel
    directory and the directory accepted; now one line naming index.json and the entry, no report written."""
    from smpler_deploy.cli.check_gpu import main

    kdir = write_kernel_dir(tmp_path / "k")
    (kdir / "link").symlink_to(victim.parent)
    _edit_index(kdir, cubin=cubin)
    assert main(["--device", "cpu", "--kernel-dir", str(kdir), "--out", str(tmp_path / "report")]) == 2
    err = _one_error_line(capsys)
    assert f"{kdir / 'index.json'}: local_attention (fp32) sm_89: cubin {cubin!r}" in err
    assert re.search(why, err) and not (tmp_path / "report").exists()


@pytest.fixture
def fake_driver(monkeypatch):
    """test_plugins_trt's recording stand-in of the CUDA driver (no GPU here), with empty launch caches."""
    plugins_tests = pytest.importorskip("test_plugins_trt")  # skips where TensorRT-RTX is missing
    from smpler_deploy.trt import launch as L

    for name in ("_functions", "_sm"):
        monkeypatch.setattr(L, name, {})
    monkeypatch.setattr(L, "_driver_version", [])
    return plugins_tests._FakeDriver(sm=89)


def _loaded(fake) -> list[bytes]:
    return [c[1] for c in fake.calls if c[0] == "cuModuleLoadData"]


def test_plugin_loader_refuses_an_escaping_cubin_and_loads_nothing(tmp_path, victim, fake_driver):
    """The plugins' loader (trt/launch.py) reads no binary named outside the kernel directory."""
    from smpler_deploy.trt import launch as L

    kdir = write_kernel_dir(tmp_path / "k")
    _edit_index(kdir, cubin="../victim/secret.txt")
    with pytest.raises(SmplerError, match=r"local_attention \(fp32\) sm_89: cubin '../victim/secret.txt': leaves"):
        L.resolve_function(fake_driver, "local_attention", "fp32", kdir)
    assert _loaded(fake_driver) == []
    write_kernel_dir(kdir)  # the directory as smpler-aot wrote it loads
    assert L.resolve_function(fake_driver, "local_attention", "fp32", kdir).image == "cubin"
    assert _loaded(fake_driver) == [b"CUBIN local_attention_fp32_sm89"]


def test_plugin_loader_refuses_an_entry_without_its_checksum(tmp_path, fake_driver):
    """Before, a missing `cubin_sha256` skipped the check and any bytes were handed to the driver."""
    from smpler_deploy.trt import launch as L

    kdir = write_kernel_dir(tmp_path / "k")
    (kdir / "local_attention_fp32_sm89.cubin").write_bytes(b"replaced")
    _edit_index(kdir, cubin_sha256=None)
    with pytest.raises(SmplerError, match=r"index.json: local_attention \(fp32\) sm_89: no field cubin_sha256; "
                                          r"rerun `smpler-aot --sm 89"):
        L.resolve_function(fake_driver, "local_attention", "fp32", kdir)
    assert _loaded(fake_driver) == []


# ---------------------------------------------------------------- dataset image names


def _dataset_with_names(tmp_path, names):
    from smpler_deploy.bench.dataset import make_synthetic_dataset

    p = make_synthetic_dataset(tmp_path / "set", n=len(names))
    z = dict(np.load(p))
    z["imgname"] = np.array(names)
    with open(tmp_path / "set" / "evil.npz", "wb") as f:
        np.savez(f, **z)
    return tmp_path / "set" / "evil.npz"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_bench_dataset_refuses_image_names_outside_images(tmp_path, victim, capsys, kind):
    """`smpler-bench --dataset`: before, absolute and `..` image names were read from outside --images."""
    from smpler_deploy.cli.bench import main

    images = tmp_path / "set"
    images.mkdir()
    (images / "link").symlink_to(victim.parent)
    name = {"dotdot": "../victim/secret.txt", "absolute": str(victim), "link": "link/secret.txt"}[kind]
    ds = _dataset_with_names(tmp_path, ["images/h36m_0000.png", name])
    assert main(["--dataset", str(ds), "--images", str(images), "--out", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys)
    assert f"--dataset {ds}: imgname[1] {name!r}" in err and err.endswith("; refused")
    assert not (tmp_path / "out").exists()
