"""TensorRT-RTX engines of the REAL SMPLer graphs (the session ONNX fixtures), built AOT without a GPU.

Every case is slow (the fixtures export the full model, the builds compile it): they run in CI via `.ci/run`,
not in the default run. Build time and engine size per case are printed as JSON at the end of the module
(`pytest -s -m slow tests/test_smpler_engines.py`).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import onnx
import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.fileio import sha256_file

try:
    from smpler_deploy.trt.importer import import_trt

    import_trt("tensorrt-rtx")
except SmplerError as e:  # pragma: no cover
    pytest.skip(f"TensorRT-RTX unavailable: {e}", allow_module_level=True)

from smpler_deploy.engine.builder import build_engine  # noqa: E402
from smpler_deploy.engine.options import EngineOptions  # noqa: E402
from smpler_deploy.trt.manifest import layers_path, manifest_path  # noqa: E402
from smpler_deploy.plugins.onnx_nodes import plugin_nodes  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")]

OUTPUTS = ["vertices", "joints", "smpl_joints", "smpl_joints2d", "rotmat", "betas", "cam"]
PLUGIN_OPS = ("SmplerLocalAttention", "SmplerGlobalAttention")
BATCH = (1, 1, 4)
MIN_ENGINE_BYTES = 1 << 20  # the fp16/int8 model is tens of MiB; anything this small is broken

REPORT: dict = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    """Collects build time / engine size per case; printed (and returned in -s output) at module end."""
    t0 = time.perf_counter()
    yield REPORT
    out = {"module_seconds": round(time.perf_counter() - t0, 1), "builds": REPORT}
    print("\nSMPLER_ENGINES_REPORT " + json.dumps(out, indent=1, sort_keys=True))


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def _onnx_meta(path) -> dict:
    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def _build(case, onnx_path, engine_dir, sms):
    engine = engine_dir / f"{case}.engine"
    t0 = time.perf_counter()
    man = build_engine(onnx_path, engine, EngineOptions(flavour="tensorrt-rtx", sms=sms, batch=BATCH),
                       log=lambda *_: None)
    wall = time.perf_counter() - t0
    size = engine.stat().st_size
    REPORT[case] = {"sms": sms, "precision": man["precision"], "build_seconds": man["build"]["seconds"],
                    "total_seconds": round(wall, 1), "engine_bytes": size, "engine_mib": round(size / 2**20, 1),
                    "layers": man["layers"]["layers"], "by_precision": man["layers"]["by_precision"]}
    _check_manifest(man, onnx_path, engine, sms)
    return man, engine


def _check_manifest(man, onnx_path, engine, sms):
    assert engine.is_file() and engine.stat().st_size > MIN_ENGINE_BYTES
    assert manifest_path(engine).is_file() and layers_path(engine).is_file()
    assert json.loads(manifest_path(engine).read_text()) == man
    assert man["engine"]["size"] == engine.stat().st_size and man["engine"]["sha256"] == sha256_file(engine)
    assert man["source"]["sha256"] == sha256_file(onnx_path)
    meta = _onnx_meta(onnx_path)
    assert man["variant"] == meta["variant"] == "smpler"
    assert man["precision"] == meta["precision"]
    assert man["trt"]["flavour"] == "tensorrt-rtx" and man["trt"]["version"]
    assert man["target"]["sms"] == sms
    assert man["profiles"] == [{"images": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224],
                                           "max": [4, 3, 224, 224]}}]
    assert man["build"]["options"]["batch"] == list(BATCH) and man["build"]["seconds"] > 0
    assert [t["name"] for t in man["inputs"]] == ["images"]
    assert man["inputs"][0]["shape"] == [-1, 3, 224, 224]
    assert [t["name"] for t in man["outputs"]] == OUTPUTS
    assert all(t["shape"][0] == -1 for t in man["outputs"])
    lay = man["layers"]
    assert lay["available"] and lay["layers"] > 100
    assert sum(lay["by_precision"].values()) == lay["layers"]


def _conv(man, precision) -> int:
    return man["layers"]["by_kind"].get("conv", {}).get(precision, 0)


def test_fp32_multi_sm(onnx_fp32, engine_dir):
    man, _ = _build("fp32_sm89_sm86", onnx_fp32, engine_dir, [89, 86])
    assert man["precision"] == "fp32" and man["plugins"] == []
    assert _conv(man, "fp32") > 100 and not man["layers"]["by_precision"].get("fp16")
    assert not man["layers"]["by_precision"].get("int8")


def test_fp16_sm89(onnx_fp16, engine_dir):
    man, _ = _build("fp16_sm89", onnx_fp16, engine_dir, [89])
    assert man["precision"] == "fp16"
    assert man["layers"]["by_precision"].get("fp16", 0) > 100
    assert _conv(man, "fp16") > 100  # the backbone runs in half
    assert not man["layers"]["by_precision"].get("int8")


def test_int8_trt_sm89(onnx_int8_trt, engine_dir):
    man, _ = _build("int8_trt_sm89", onnx_int8_trt, engine_dir, [89])
    assert man["precision"] == "int8"
    assert _conv(man, "int8") > 100, man["layers"]["by_kind"]
    assert man["layers"]["int8_compute"] >= _conv(man, "int8")


def _plugin_case(case, onnx_path, engine_dir, dtype):
    man, engine = _build(case, onnx_path, engine_dir, [89])
    nodes = plugin_nodes(onnx_path)
    want = Counter(op for _, op in nodes)
    assert set(want) == set(PLUGIN_OPS) and all(want[op] > 0 for op in PLUGIN_OPS), want
    assert {p["name"]: (p["count"], p["registered"]) for p in man["plugins"]} == {op: (want[op], True) for op in PLUGIN_OPS}
    records = json.loads(layers_path(engine).read_text())
    custom = [r for r in records if r["type"] == "custom_layer"]
    by_name = {name: op for name, op in nodes}
    got = Counter()
    for r in custom:
        ops = {by_name[n] for n in r["onnx_layers"] if n in by_name} or {op for op in PLUGIN_OPS if op in r["name"]}
        assert len(ops) == 1, r  # one plugin node per custom layer: kept, not replaced or fused together
        got[ops.pop()] += 1
    assert got == want, f"custom layers {dict(got)} vs ONNX plugin nodes {dict(want)}"
    assert man["layers"]["by_kind"].get("plugin") and sum(man["layers"]["by_kind"]["plugin"].values()) == len(custom)
    for r in custom:  # strongly typed: the plugin runs in the graph's attention dtype
        assert r["inputs"][0] == dtype, r
    REPORT[case]["plugin_layers"] = dict(got)
    return man


def test_plugins_fp32_sm89(onnx_plugins_fp32, engine_dir):
    man = _plugin_case("plugins_fp32_sm89", onnx_plugins_fp32, engine_dir, "fp32")
    assert man["precision"] == "fp32"


def test_plugins_fp16_sm89(onnx_plugins_fp16, engine_dir):
    man = _plugin_case("plugins_fp16_sm89", onnx_plugins_fp16, engine_dir, "fp16")
    assert man["precision"] == "fp16" and man["layers"]["by_precision"].get("fp16", 0) > 100


def test_cli_engine_from_onnx(onnx_fp32, engine_dir, capsys):
    from smpler_deploy.cli.export import main

    out = engine_dir / "cli_fp32_sm89.engine"
    t0 = time.perf_counter()
    rc = main(["--format", "engine", "--trt", "tensorrt-rtx", "--sm", "89", "--onnx", str(onnx_fp32), "-o", str(out)])
    wall = time.perf_counter() - t0
    cap = capsys.readouterr()
    assert rc == 0
    assert out.is_file() and out.stat().st_size > MIN_ENGINE_BYTES and manifest_path(out).is_file()
    man = json.loads(manifest_path(out).read_text())
    assert man["target"]["sms"] == [89] and man["source"]["sha256"] == sha256_file(onnx_fp32)
    assert man["build"]["options"]["batch"] == [1, 1, 8]  # the CLI default profile
    assert f"wrote {out}" in cap.out and "target SM89" in cap.out
    assert "engine layers by precision" in cap.out and "conv" in cap.out and "fp32" in cap.out
    REPORT["cli_fp32_sm89"] = {"build_seconds": man["build"]["seconds"], "total_seconds": round(wall, 1),
                               "engine_bytes": out.stat().st_size, "engine_mib": round(out.stat().st_size / 2**20, 1)}
