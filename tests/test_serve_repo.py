"""Triton model repository (smpler-export --format triton): every config.pbtxt parsed with Triton's ModelConfig
protobuf, the ensemble wired end to end, the engine's profile as max_batch_size, all-or-nothing writes, and the
Python-backend model's pre/post-processing against the project's own crop convention and ONNX Runtime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")

from smpler_deploy.errors import SmplerError  # noqa: E402
from smpler_deploy.outputs import OUTPUT_NAMES  # noqa: E402
from smpler_deploy.serve import handlers  # noqa: E402
from smpler_deploy.serve.model_config import config_text, parse_config  # noqa: E402
from smpler_deploy.serve.repository import RepoOptions, write_repository  # noqa: E402


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A tiny graph with SMPLer's I/O at the real 224x224 crop size (ONNX Runtime runs it in milliseconds)."""
    import tiny_smpler

    hw = tiny_smpler.HW
    tiny_smpler.HW = 224
    try:
        return tiny_smpler.tiny_smpler_onnx(tmp_path_factory.mktemp("g") / "tiny224.onnx")
    finally:
        tiny_smpler.HW = hw


@pytest.fixture(scope="module")
def engine(graph, tmp_path_factory):
    """A real TensorRT-RTX engine of that graph (built here for SM89, batch profile 1:2:8) and its manifest."""
    pytest.importorskip("tensorrt_rtx")
    from smpler_deploy.engine.builder import build_engine
    from smpler_deploy.engine.options import EngineOptions

    path = tmp_path_factory.mktemp("e") / "tiny.engine"
    build_engine(graph, path, EngineOptions(flavour="tensorrt-rtx", sms=[89], batch=[1, 2, 8]), log=lambda *_: None)
    return path


def _configs(repo):
    return {d.name: parse_config((d / "config.pbtxt").read_text(), d.name) for d in sorted(repo.iterdir())}


def test_repository_every_model_parses_and_the_ensemble_is_wired(graph, engine, tmp_path):
    repo = tmp_path / "repo"
    write_repository(repo, onnx=graph, engine=engine,
                     opts=RepoOptions(instances=2, onnx_device="cpu", queue_delay_us=500))
    cfg = _configs(repo)
    assert set(cfg) == {"smpler_trt", "smpler_onnx", "smpler_crop", "smpler_uncrop", "smpler"}
    trt, onnx, ens = cfg["smpler_trt"], cfg["smpler_onnx"], cfg["smpler"]
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 8  # the engine profile's max
    assert list(trt.dynamic_batching.preferred_batch_size) == [2, 8]  # profile opt and max
    assert trt.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in trt.instance_group] == [(trt.instance_group[0].KIND_GPU, 2)]
    assert onnx.backend == "onnxruntime" and onnx.instance_group[0].kind == onnx.instance_group[0].KIND_CPU
    assert [o.name for o in trt.output] == list(OUTPUT_NAMES) and list(trt.output[0].dims) == [6890, 3]
    assert list(trt.input[0].dims) == [3, 224, 224]
    assert (repo / "smpler_trt/1/model.plan").read_bytes() == engine.read_bytes()
    assert (repo / "smpler_onnx/1/model.onnx").read_bytes() == graph.read_bytes()
    for name in ("smpler_crop", "smpler_uncrop"):
        assert cfg[name].backend == "python" and (repo / name / "1/model.py").is_file()
        assert "smpler_deploy.serve.python_model" in (repo / name / "1/model.py").read_text()

    # ensemble: every step input is an ensemble input or an earlier step's output, every output is produced,
    # and each step's tensor names exist on the model it calls
    assert ens.platform == "ensemble" and ens.max_batch_size == 8
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["smpler_crop", "smpler_trt", "smpler_uncrop"]
    have = {i.name for i in ens.input}
    for s in steps:
        model = cfg[s.model_name]
        assert set(s.input_map) == {i.name for i in model.input}
        assert set(s.input_map.values()) <= have
        assert set(s.output_map) <= {o.name for o in model.output}
        have |= set(s.output_map.values())
    assert {o.name for o in ens.output} <= have
    assert {o.name for o in ens.output} == {*OUTPUT_NAMES, "joints2d_image"}


def test_default_ensemble_runs_onnxruntime_without_engine_and_python_session_on_request(graph, tmp_path):
    cfg = write_repository(tmp_path / "a", onnx=graph)
    assert cfg["smpler"]["ensemble_scheduling"]["step"][1]["model_name"] == "smpler_onnx"
    assert "smpler_trt" not in cfg and "smpler_python" not in cfg
    assert _configs(tmp_path / "a")["smpler_onnx"].instance_group[0].kind == 1  # KIND_GPU by default
    cfg = write_repository(tmp_path / "b", onnx=graph, opts=RepoOptions(ensemble="python", session_threads=2))
    py = _configs(tmp_path / "b")["smpler_python"]
    assert py.parameters["stage"].string_value == "session" and py.parameters["threads"].string_value == "2"
    assert (tmp_path / "b/smpler_python/1/model.onnx").is_file()
    with pytest.raises(SmplerError, match="^ensemble tensorrt: needs `engine`"):
        write_repository(tmp_path / "c", onnx=graph, opts=RepoOptions(ensemble="tensorrt"))
    assert not (tmp_path / "c").exists()


def test_plugin_engine_and_foreign_graph_refused_before_writing(graph, engine, tmp_path):
    from smpler_deploy.trt.manifest import read_manifest, write_manifest

    plug = tmp_path / "plug.engine"
    shutil.copyfile(engine, plug)
    man = read_manifest(engine)
    write_manifest(plug, man | {"plugins": [{"name": "SmplerGlobalAttention"}]})
    with pytest.raises(SmplerError, match="`no_plugins`"):
        write_repository(tmp_path / "r", engine=plug)
    write_manifest(plug, man | {"profiles": [{"images": {k: [2, 3, 224, 224] for k in ("min", "opt", "max")}}]})
    with pytest.raises(SmplerError, match="profile batch min is 2"):
        write_repository(tmp_path / "r", engine=plug)
    import tiny_smpler

    foreign = tiny_smpler.tiny_smpler_onnx(tmp_path / "small.onnx")  # 32x32 input: not SMPLer's crop
    with pytest.raises(SmplerError, match=r"expected one input images float32 \[B,3,224,224\]"):
        write_repository(tmp_path / "r", onnx=foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plug.engine", "plug.engine.json", "small.onnx"]


def test_failed_write_leaves_nothing_and_force_keeps_the_old_repository(graph, tmp_path, monkeypatch):
    import smpler_deploy.serve.repository as R

    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".repo.{int(dead.stdout)}.abc.stage"  # left by a killed run of that (finished) process
    (stale / "smpler_onnx").mkdir(parents=True)
    write_repository(tmp_path / "repo", onnx=graph)
    assert not stale.exists()
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(SmplerError, match="exists"):
        write_repository(tmp_path / "repo", onnx=graph)

    def fail(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R.shutil, "copyfile", fail)  # the disk fills up while the graph is copied
    with pytest.raises(OSError):
        write_repository(tmp_path / "repo", onnx=graph, force=True)
    with pytest.raises(OSError):
        write_repository(tmp_path / "new", onnx=graph)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # no stage, no "new"


def test_configs_are_checked_by_triton_protobuf():
    with pytest.raises(SmplerError, match="bad/config.pbtxt: not a valid Triton model config"):
        parse_config('name: "x"\nmax_batch_sise: 8\n', "bad/config.pbtxt")
    with pytest.raises(SmplerError, match="invalid Triton model config"):
        config_text({"name": "x", "instance_group": [{"kind": "KIND_TPU"}]})
    assert parse_config(config_text({"name": "x", "max_batch_size": 4})).max_batch_size == 4


def test_export_cli_writes_a_repository_and_refuses_misplaced_flags(graph, tmp_path, capsys):
    from smpler_deploy.cli.export import main

    repo = tmp_path / "repo"
    assert main(["--format", "triton", "--onnx", str(graph), "-o", str(repo), "--instances", "3",
                 "--triton-device", "cpu", "--batch", "1:4:16"]) == 0
    onnx = _configs(repo)["smpler_onnx"]
    assert onnx.max_batch_size == 16 and list(onnx.dynamic_batching.preferred_batch_size) == [4, 16]
    assert onnx.instance_group[0].count == 3
    assert "ensemble 'smpler' runs smpler_onnx" in capsys.readouterr().out
    for argv, msg in ((["--format", "onnx", "-o", str(tmp_path / "x.onnx"), "--instances", "2"],
                       "--instances: applies to --format triton only"),
                      (["--format", "triton", "--onnx", str(graph), "-o", str(tmp_path / "r2"), "--sm", "89"],
                       "--sm: applies to --format engine"),
                      (["--format", "triton", "--onnx", str(graph), "-o", str(tmp_path / "r3"), "--plugins"],
                       "Python TensorRT plugins"),
                      (["--format", "triton", "-o", str(tmp_path / "r.onnx")], "writes a model repository"),
                      (["--format", "triton", "--onnx", str(graph), "-o", str(repo)], "exists")):
        assert main(argv) == 2
        assert msg in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("x.onnx", "r2", "r3", "r.onnx"))


def test_handlers_match_the_shared_crop_and_onnx_runtime(graph):
    from smpler_deploy.preprocess import crop_person, norm_to_crop_px, sample_images
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    img = sample_images()[0][1]
    box = np.array([100, 20, 250, 480], np.float32)
    x, crop_box = handlers.crop_one(img, box)
    ref, t = crop_person(img, box)
    assert np.array_equal(x, ref) and np.allclose(crop_box, [t.cx, t.cy, t.side])
    j = np.random.default_rng(0).uniform(-1, 1, (24, 2)).astype(np.float32)
    assert np.allclose(handlers.uncrop_joints(j, crop_box), t.crop_to_image(norm_to_crop_px(j)), atol=1e-3)
    with pytest.raises(SmplerError, match="box: expected four finite numbers"):
        handlers.crop_one(img, [np.nan, 0, 1, 1])
    with pytest.raises(SmplerError, match="image: expected uint8"):
        handlers.crop_one(img.astype(np.float32), box)

    sess = OnnxRuntimeSession(graph, threads=1)
    a, b = x[None], np.flip(x, -1)[None].copy()
    bad = np.full_like(a, np.nan)
    res = handlers.infer_batch(sess, [a, bad, b, np.zeros((1, 3, 32, 32), np.float32)])
    assert isinstance(res[1], SmplerError) and "NaN" in str(res[1])
    assert isinstance(res[3], SmplerError) and "[n,3,224,224]" in str(res[3])
    for got, inp in ((res[0], a), (res[2], b)):  # the good requests of the batch still get their own answers
        want = sess.infer(inp).numpy()
        for n in OUTPUT_NAMES:
            np.testing.assert_allclose(got[n], getattr(want, n), atol=1e-5)
    # finite crops whose outputs overflow to NaN/Inf fail alone; their batch neighbours still get their answers
    huge = np.full_like(a, 3e38)
    res = handlers.infer_batch(sess, [a, huge, b])
    assert isinstance(res[1], SmplerError) and "NaN/Inf in output" in str(res[1])
    for got, inp in ((res[0], a), (res[2], b)):
        np.testing.assert_allclose(got["vertices"], sess.infer(inp).vertices, atol=1e-5)
    sess.close()
