"""Real TensorRT-RTX ahead-of-time builds (no GPU needed) of small fp32 / fp16 / int8 ONNX graphs.

Until the SMPLer export lands, the graphs are a small conv net with SMPLer's input name and a dynamic batch.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from smpler_deploy.trt.manifest import check_manifest, manifest_path, read_manifest
from smpler_deploy.errors import SmplerError

trt = pytest.importorskip("tensorrt_rtx")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from smpler_deploy.engine.builder import build_engine  # noqa: E402
from smpler_deploy.engine.options import EngineOptions  # noqa: E402
from smpler_deploy.engine.layer_summary import format_layer_summary  # noqa: E402

HW = 64  # smaller than 224 for speed; the builder takes the shape from the ONNX


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, 2, 1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


class HalfWithFloatIO(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m.half()

    def forward(self, x):
        return self.m(x.half()).float()


def _export(model, path, precision):
    x = torch.randn(2, 3, HW, HW)
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["out"],
                      dynamic_axes={"images": {0: "B"}, "out": {0: "B"}}, dynamo=False, opset_version=17)  # fmt: skip
    _tag(path, precision)


def _tag(path, precision):
    m = onnx.load(str(path))
    for k, v in {"variant": "test-convnet", "precision": precision}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def _quantize(src, dst, symmetric):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"images": rng.standard_normal((1, 3, HW, HW)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    # TensorRT: symmetric (zero points 0) and float bias (no int32 bias DQ).
    opts = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": False}
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True, extra_options=opts)  # fmt: skip
    _tag(dst, "int8")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = ConvNet().eval()
    _export(model, d / "fp32.onnx", "fp32")
    import copy

    _export(HalfWithFloatIO(copy.deepcopy(model)), d / "fp16.onnx", "fp16")
    _quantize(d / "fp32.onnx", d / "int8.onnx", symmetric=True)
    _quantize(d / "fp32.onnx", d / "int8_asym.onnx", symmetric=False)
    return d


def _quiet(*_):
    pass


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


@pytest.mark.parametrize("sm", [89, 86])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_precisions(graphs, tmp_path, precision, sm):
    engine = tmp_path / f"{precision}.engine"
    lines = []
    m = build_engine(graphs / f"{precision}.onnx", engine, EngineOptions(sms=[sm], batch="1:2:8"), log=lines.append)
    assert any(line.startswith("[2/3] building") for line in lines)
    data = engine.read_bytes()
    assert m == read_manifest(engine)
    assert m["engine"]["size"] == len(data) > 10_000
    check_manifest(m, engine, trt.__version__, sm, flavour="tensorrt-rtx")  # consistent with itself
    assert m["precision"] == precision and m["variant"] == "test-convnet"
    assert m["trt"] == {"flavour": "tensorrt-rtx", "version": trt.__version__}
    assert m["target"]["sms"] == [sm]
    assert m["profiles"] == [{"images": {"min": [1, 3, HW, HW], "opt": [2, 3, HW, HW], "max": [8, 3, HW, HW]}}]
    assert m["inputs"] == [{"name": "images", "shape": [-1, 3, HW, HW], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "out", "shape": [-1, 10], "dtype": "float32"}]
    assert m["source"]["sha256"] and m["source"]["onnx"].endswith(f"{precision}.onnx")
    assert m["plugins"] == [] and m["build"]["seconds"] > 0 and m["build"]["strongly_typed"]
    convs = m["layers"]["by_kind"]["conv"]
    assert convs == {precision: 2}, format_layer_summary(m["layers"])  # both convolutions in the graph's precision
    if precision == "int8":
        assert m["layers"]["int8_compute"] == 3  # 2 convs + the gemm
    records = json.loads((tmp_path / f"{precision}.engine.layers.json").read_text())
    assert any(name.endswith("c1/Conv") for r in records for name in r["onnx_layers"])


def test_multi_sm_and_options(graphs, tmp_path):
    engine = tmp_path / "multi.engine"
    m = build_engine(graphs / "fp16.onnx", engine, EngineOptions(sms=["89", "120"], builder_optimization_level=0,
                     mem_pool_size="workspace:1G"), log=_quiet)  # fmt: skip
    assert m["target"]["sms"] == [89, 120]
    assert m["build"]["memory_pools"] == {"WORKSPACE": 1 << 30}
    assert m["build"]["options"]["mem_pool_size"] == "workspace:1G"
    assert m["build"]["options"]["builder_optimization_level"] == 0
    check_manifest(m, engine, trt.__version__, 120)


def test_hardware_compatibility_level_spellings(graphs, tmp_path):
    m = build_engine(graphs / "fp32.onnx", tmp_path / "hc.engine",
                     EngineOptions(sms=[86], hardware_compatibility_level="ampere+"), log=_quiet)
    assert m["target"]["hardware_compatibility_level"] == "ampere_plus"
    with pytest.raises(SmplerError, match="hardware_compatibility_level turing: expected none, ampere_plus"):
        build_engine(graphs / "fp32.onnx", tmp_path / "hc2.engine", EngineOptions(hardware_compatibility_level="turing"),
                     log=_quiet)
    assert not (tmp_path / "hc2.engine").exists()


def test_timing_cache_round_trip(graphs, tmp_path):
    cache = tmp_path / "timing.cache"
    m1 = build_engine(graphs / "fp32.onnx", tmp_path / "a.engine", EngineOptions(timing_cache=cache), log=_quiet)
    assert cache.is_file() and cache.stat().st_size > 0
    assert m1["build"]["timing_cache_loaded"] is False
    m2 = build_engine(graphs / "fp32.onnx", tmp_path / "b.engine", EngineOptions(timing_cache=cache), log=_quiet)
    assert m2["build"]["timing_cache_loaded"] is True and cache.stat().st_size > 0
    # written atomically: no temp or Polygraphy .lock files left behind
    assert sorted(p.name for p in tmp_path.iterdir() if "cache" in p.name) == ["timing.cache"]


def test_manifest_mismatches(graphs, tmp_path):
    engine = tmp_path / "m.engine"
    m = build_engine(graphs / "fp32.onnx", engine, log=_quiet)
    with pytest.raises(SmplerError) as e:
        check_manifest(m, engine, "1.8.0.1", 89)
    assert f"built with TensorRT-RTX {trt.__version__}, this is TensorRT-RTX 1.8.0.1" in _one_line(e)
    with pytest.raises(SmplerError) as e:
        check_manifest(m, engine, trt.__version__, 120)
    assert "built for SM89, this GPU is SM120; rebuild with `sms` 120" in _one_line(e)
    with pytest.raises(SmplerError) as e:
        check_manifest(m, engine, trt.__version__, 89, flavour="tensorrt")
    assert "use `flavour` tensorrt-rtx" in _one_line(e)
    engine.write_bytes(engine.read_bytes()[:-1000])  # truncated
    with pytest.raises(SmplerError) as e:
        check_manifest(m, engine, trt.__version__, 89)
    assert "sha256 differs from its manifest m.engine.json" in _one_line(e)
    manifest_path(engine).unlink()
    with pytest.raises(SmplerError) as e:
        read_manifest(engine)
    assert "no manifest m.engine.json" in _one_line(e)


def _only(dirpath, names):
    assert sorted(p.name for p in Path(dirpath).iterdir()) == sorted(names)


def test_unknown_sm(graphs, tmp_path):
    with pytest.raises(SmplerError) as e:
        build_engine(graphs / "fp32.onnx", tmp_path / "x.engine", EngineOptions(sms=[90]), log=_quiet)
    assert "sms 90: not a TensorRT-RTX target; valid: 75, 80, 86, 89, 120, 121" in _one_line(e)
    _only(tmp_path, [])


def test_flavour_not_installed(graphs, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("full TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(SmplerError) as e:
        build_engine(graphs / "fp32.onnx", tmp_path / "x.engine", EngineOptions(flavour="tensorrt"), log=_quiet)
    assert _one_line(e).startswith("flavour tensorrt: cannot import tensorrt")
    _only(tmp_path, [])


def test_parse_failure_writes_nothing(graphs, tmp_path):
    """Non-zero zero points (ORT's default asymmetric activations) are refused by the parser: one line, no files."""
    with pytest.raises(SmplerError) as e:
        build_engine(graphs / "int8_asym.onnx", tmp_path / "x.engine", EngineOptions(timing_cache=tmp_path / "t.cache"),
                     log=_quiet)
    msg = _one_line(e)
    assert "could not parse" in msg and "zero point" in msg.lower()
    _only(tmp_path, [])


def test_existing_output_needs_force(graphs, tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"old")
    with pytest.raises(SmplerError) as e:
        build_engine(graphs / "fp32.onnx", engine, log=_quiet)
    assert "file exists (pass `force` to overwrite)" in _one_line(e)
    build_engine(graphs / "fp32.onnx", engine, force=True, log=_quiet)
    assert engine.stat().st_size > 1000
    with pytest.raises(SmplerError, match="^batch 8:1:1: need MIN <= OPT <= MAX"):
        build_engine(graphs / "fp32.onnx", tmp_path / "y.engine", EngineOptions(batch="8:1:1"), log=_quiet)
    with pytest.raises(SmplerError, match="ONNX file not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "y.engine", log=_quiet)


def _plugin_graph(path):
    """Conv + one SmplerGlobalAttention node, with the channel/head counts the compiled kernels expect."""
    from smpler_deploy.plugins import aot
    from smpler_deploy.plugins.onnx_nodes import global_attention_multiscale_plugin

    c, nh = aot.CHANNELS, aot.HEADS

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.q = torch.nn.Conv2d(3, c, 3, 2, 1), torch.nn.Linear(c, 4 * 2 * nh * c)

        def forward(self, x):
            f = self.conv(x)
            tokens = f.flatten(2).transpose(1, 2)
            keys = [tokens[:, : 64 // 2**i] for i in range(4)]
            return global_attention_multiscale_plugin(keys, self.q(f.mean((2, 3))).reshape(-1, 4, 2, nh, c))

    torch.onnx.export(M().eval(), (torch.randn(2, 3, 16, 16),), str(path), input_names=["images"],
                      output_names=["out"], dynamic_axes={"images": {0: "B"}, "out": {0: "B"}}, dynamo=False,
                      opset_version=19)  # fmt: skip


def test_plugin_graph(tmp_path, monkeypatch):
    """Plugin nodes: creators registered before parsing, plugin listed in the manifest and the layer summary;
    without the TensorRT-RTX soname link, a clear refusal and no files."""
    _plugin_graph(tmp_path / "p.onnx")
    m = build_engine(tmp_path / "p.onnx", tmp_path / "p.engine", log=_quiet)
    assert [(p["name"], p["namespace"], p["registered"]) for p in m["plugins"]] == [
        ("SmplerGlobalAttention", "smpler", True)
    ]
    assert m["layers"]["by_kind"]["plugin"] == {"fp32": 1}
    from smpler_deploy.trt import plugins as trt_plugins

    with monkeypatch.context() as mp:  # soname link missing and site-packages read-only: refuse, never abort
        mp.setattr(trt_plugins, "ensure_rtx_soname", lambda: False)
        with pytest.raises(SmplerError) as e:
            build_engine(tmp_path / "p.onnx", tmp_path / "q.engine", log=_quiet)
        assert "ln -s libtensorrt_rtx.so.1" in _one_line(e) and "`no_plugins`" in str(e.value)
    assert not (tmp_path / "q.engine").exists() and not manifest_path(tmp_path / "q.engine").exists()


# ---------------------------------------------------------------- refusals by metadata, Ctrl-C


def test_int8_cpu_graph_refused_by_metadata(tmp_path):
    from tiny_smpler import tiny_smpler_onnx

    g = tiny_smpler_onnx(tmp_path / "g.onnx", "int8", int8_target="cpu")
    with pytest.raises(SmplerError) as e:
        build_engine(g, tmp_path / "x.engine", log=_quiet)
    assert _one_line(e).startswith(f"{g}: int8-cpu is ONNX Runtime's layout") and "--target trt" in str(e.value)
    _only(tmp_path, ["g.onnx"])


def _interrupt_at_first_phase(monkeypatch):
    """Deliver a real SIGINT from another thread once TensorRT reports its first build phase (the builder's own
    IProgressMonitor callback waits until the signal is sent, so it lands mid-build on any machine)."""
    import os
    import signal
    import threading

    from smpler_deploy.engine import builder

    started, sent = threading.Event(), threading.Event()

    def killer():
        started.wait(60)
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    def phase_start(self, name, parent, steps):
        if not started.is_set():
            started.set()
            sent.wait(60)

    monkeypatch.setattr(builder._CancelOnInterrupt, "phase_start", phase_start)
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    return t


def test_ctrl_c_cancels_the_build_and_keeps_nothing(tmp_path, monkeypatch):
    import signal

    from tiny_smpler import tiny_smpler_onnx

    g = tiny_smpler_onnx(tmp_path / "g.onnx")
    before = signal.getsignal(signal.SIGINT)
    t = _interrupt_at_first_phase(monkeypatch)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        build_engine(g, tmp_path / "x.engine", EngineOptions(timing_cache=tmp_path / "t.cache"), log=lines.append)
    t.join(10)
    assert "interrupt: engine build cancelled; nothing written" in lines, lines  # TensorRT stopped the build
    assert not any(line.startswith("[3/3]") for line in lines)
    _only(tmp_path, ["g.onnx"])
    assert signal.getsignal(signal.SIGINT) is before  # the handler is the build's only


def test_sm_spellings(graphs, tmp_path):
    from smpler_deploy.engine.targets import check_sms

    assert check_sms(["8.9", "sm_86", "SM120", 89], [75, 80, 86, 89, 120]) == [89, 86, 120]
    with pytest.raises(SmplerError) as e:
        check_sms(["9.9"], [75, 89])
    assert _one_line(e) == "sms 9.9: not a TensorRT-RTX target; valid: 75, 89"  # the field; the CLI says --sm


@pytest.mark.parametrize("field,value", [
    ("schema", "1"), ("engine.size", True), ("trt.version", 11), ("target.sms", ["89"]), ("profiles", {}),
    ("inputs[0].shape", "dynamic"), ("profiles[0].images.max", [8, "3", 64, 64]), ("build.options", []),
    ("precision", 16), ("engine.sha256", None),
])  # fmt: skip
def test_manifest_wrong_value_types_are_one_line(graphs, tmp_path, field, value):
    """A hand-edited manifest: one line naming the file and the field, never a TypeError in a session."""
    import re

    engine = tmp_path / "m.engine"
    build_engine(graphs / "fp32.onnx", engine, log=_quiet)
    data = json.loads(manifest_path(engine).read_text())
    node, parts = data, re.findall(r"[^.\[\]]+", field)
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(SmplerError) as e:
        read_manifest(engine)
    assert _one_line(e).startswith(f"{manifest_path(engine)}: field {field} is {json.dumps(value)}, expected ")


def test_manifest_options_are_the_engine_options(graphs, tmp_path):
    """`build.options` is the EngineOptions the engine was built with, field for field (`asdict`), whether built
    in this process or in the build worker (the options' one JSON round trip)."""
    from dataclasses import asdict

    opts = EngineOptions(flavour="tensorrt-rtx", sms=[89, 86], batch=[1, 2, 4], builder_optimization_level=0,
                         mem_pool_size="workspace:1G", tf32=False)
    m = build_engine(graphs / "fp32.onnx", tmp_path / "a.engine", opts, log=_quiet)
    assert m["build"]["options"] == asdict(opts) == read_manifest(tmp_path / "a.engine")["build"]["options"]
    child = build_engine(graphs / "fp32.onnx", tmp_path / "b.engine", opts, isolate=True, log=_quiet)
    assert child["build"]["options"] == asdict(opts) and child["target"]["sms"] == [89, 86]
