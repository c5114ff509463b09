"""Ahead-of-time compilation without a GPU: binaries, index.json, PTX ISA for JetPack 6, launch planning."""

import hashlib
import json
import re

import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.plugins import abi, aot, kernel_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    index = aot.build(out, [87, 89])  # in a child process when this one runs the Triton interpreter
    return out, index


def test_index_and_files(built):
    out, index = built
    assert index == json.loads((out / "index.json").read_text())
    assert index["triton_version"] == "3.9.0" and index["kernel_abi"] == 1 and index["format"] == 2
    keys = {(e["kernel"], e["dtype"], e["sm"]) for e in index["kernels"]}
    assert keys == {(k, d, s) for k in aot.KERNEL_NAMES for d in aot.DTYPES for s in (87, 89)}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left behind
    for e in index["kernels"]:
        stem = f"{e['kernel']}_{e['dtype']}_sm{e['sm']}"
        cubin = (out / f"{stem}.cubin").read_bytes()
        assert cubin[:4] == b"\x7fELF" and hashlib.sha256(cubin).hexdigest() == e["cubin_sha256"]
        assert hashlib.sha256((out / f"{stem}.ptx").read_bytes()).hexdigest() == e["ptx_sha256"]
        # Triton 3.9 assembles sm < 90 with its CUDA 12.9 ptxas: such cubins load on any CUDA 12 driver
        assert e["ptxas_cuda"] == "12.9" and e["ptx_min_driver"] == 12000 and e["num_ctas"] == 1
        assert e["entry_name"] == f"{e['kernel']}_kernel"
        assert e["num_warps"] == abi.NUM_WARPS[e["kernel"]] and e["threads_per_block"] == 32 * e["num_warps"]
        assert 0 < e["shared"] <= 99 * 1024  # fits sm_86/89 (99 KiB opt-in) and Orin (163 KiB)
        assert e["args"][-2:] == [{"name": "global_scratch", "type": "*i8"}, {"name": "profile_scratch", "type": "*i8"}]
        ptx = (out / f"{stem}.ptx").read_text()
        version = re.search(r"^\.version (\d+)\.(\d+)", ptx, re.M)
        assert (int(version[1]), int(version[2])) == (8, 0), "the PTX floor: CUDA 12.0 drivers (R525+) JIT it"
        assert re.search(rf"^\.target sm_{e['sm']}\b", ptx, re.M)
        assert e["ptx_version"] == "8.0" and e["ptx_target"] == f"sm_{e['sm']}"
        aot.check_variant(e, ptx)  # the PTX entry's parameters are the index's, shared memory fits the target
        assert f".entry {e['entry_name']}(" in ptx
        # every parameter the index lists is a kernel parameter, in order
        assert len(re.findall(rf"\.param \S+(?: \.ptr \.global \.align \d+)? {e['entry_name']}_param_\d+", ptx)) \
            == len(e["args"])
    local = {e["dtype"]: e for e in index["kernels"] if e["kernel"] == "local_attention" and e["sm"] == 87}
    assert local["fp16"]["args"][0]["type"] == "*fp16" and local["fp16"]["args"][1]["type"] == "*fp32"


def test_sm87_ptx_target(built):
    out, _ = built
    ptx = (out / "local_attention_fp16_sm87.ptx").read_text()
    assert ".target sm_87" in ptx and ".version 8.0" in ptx


def test_rebuild_merges_index(built, tmp_path):
    out, index = built
    # A second run for another SM keeps the first run's entries (index merge), checked without compiling:
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert kernel_store.load_index(tmp_path)["kernels"] == index["kernels"]


def test_ptx_isa_rule():
    assert [aot.ptx_isa_for(s) for s in (75, 87, 89, 90, 120)] == [80, 80, 80, 80, 87]


def test_parse_sms():
    assert aot.parse_sms(None) == list(aot.SUPPORTED_SMS)
    assert aot.parse_sms(["89", "87,sm_90", "8.6"]) == [86, 87, 89, 90]
    with pytest.raises(SmplerError, match=r"^sms 88: not a smpler-aot target; valid: 75, 80, 86, 87, 89, 90, 120$"):
        aot.parse_sms(["88"])  # the engine builds' parser (engine.targets), against smpler-aot's targets


def test_cli_errors(capsys):
    from smpler_deploy.cli.aot import main

    assert main(["--sm", "88", "-o", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --sm 88: not a smpler-aot target; valid: 75, 80, 86, 87, 89, 90, 120"]
    with pytest.raises(SystemExit) as e:
        main(["--bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _entry(kernel, dtype="fp16", sm=87):
    spec = abi.variant_spec(kernel, dtype)
    return {"kernel": kernel, "dtype": dtype, "sm": sm, "threads_per_block": 128, "shared": 1024,
            "constexprs": spec["constexprs"], "entry_name": f"{kernel}_kernel", "cubin": "x.cubin",
            "args": [{"name": n, "type": t} for n, t in spec["args"]]
            + [{"name": n, "type": "*i8"} for n in abi.HIDDEN_ARGS]}


def test_plan_local():
    plan = abi.plan_launch(_entry("local_attention"),
                           [(3, 56, 56, 128), (3, 24, 2), (3, 24, 4, 128), (4, 9, 9)], [10, 20, 30, 40, 50])
    assert plan.grid == (72, 1, 1) and plan.block == (128, 1, 1) and plan.shared == 1024
    assert plan.args == (("*fp16", 10), ("*fp32", 20), ("*fp16", 30), ("*fp32", 40), ("*fp16", 50),
                         ("i32", 24), ("i32", 56), ("i32", 128), ("*i8", 0), ("*i8", 0))
    with pytest.raises(SmplerError, match="compiled for C=128"):
        abi.plan_launch(_entry("local_attention"),
                        [(1, 56, 56, 256), (1, 24, 2), (1, 24, 4, 256), (4, 9, 9)], [1, 2, 3, 4, 5])


def test_plan_global():
    shapes = [(2, 4, 26, 4, 128), (2, 3136, 128), (2, 784, 128), (2, 196, 128), (2, 49, 128)]
    plan = abi.plan_launch(_entry("global_attention", "fp32"), shapes, list(range(1, 7)))
    assert plan.grid == (4, 2, 4)  # cdiv(26*4, 32), batch, scales
    assert [v for _, v in plan.args[6:12]] == [104, 128, 3136, 784, 196, 49]
    with pytest.raises(SmplerError, match="buffers"):
        abi.plan_launch(_entry("global_attention"), shapes, [1, 2, 3])


def test_missing_sm_names_command(built):
    out, index = built
    with pytest.raises(SmplerError, match=r"no cubin for sm_86 .*smpler-aot --sm 86"):
        kernel_store.find_entry(index, "local_attention", "fp16", 86, out)
    with pytest.raises(SmplerError, match="smpler-aot"):
        kernel_store.load_index(out / "missing")


def test_sm90_cubin_is_cuda13_and_recorded(tmp_path):
    """sm_90 goes through Triton's CUDA 13 ptxas: index.json says so, and a CUDA 12 driver is sent to the PTX."""
    index = aot.build(tmp_path, [90], kernels=["local_attention"], dtypes=["fp32"])
    (e,) = index["kernels"]
    assert e["ptx_target"] == "sm_90a" and e["ptxas_cuda"].startswith("13.")
    cubin = (tmp_path / e["cubin"]).read_bytes()
    assert cubin[7:9] == bytes([0x41, 8])  # ELF OS ABI "CUDA", ABI version 8: what CUDA 12 drivers cannot load
    assert kernel_store.load_order(e, 12060) == ["ptx"]  # JetPack 6 / TensorRT cu12 hosts
    assert e["ptx_version"] == "8.0" and e["ptx_min_driver"] == 12000
    assert kernel_store.load_order(e, 12020) == kernel_store.load_order(e, 12040) == ["ptx"]  # R535 / R550 fleets
    assert kernel_store.load_order(e, 13000) == ["cubin", "ptx"]


def test_load_order_rule():
    e = {"kernel": "global_attention", "dtype": "fp16", "sm": 120, "ptx": "g.ptx", "ptx_version": "8.7",
         "ptx_min_driver": 12080, "ptxas_cuda": "13.4"}
    assert kernel_store.load_order(e, 13000) == ["cubin", "ptx"]
    assert kernel_store.load_order(e, 12080) == ["ptx"]
    with pytest.raises(SmplerError, match=r"supports CUDA 12\.6; the cubin needs a CUDA 13\.x driver and its PTX "
                                          r"\(ISA 8\.7\) CUDA 12\.8 or later; update the driver"):
        kernel_store.load_order(e, 12060)
    e89 = dict(e, sm=89, ptx_version="8.5", ptx_min_driver=12050, ptxas_cuda="12.9")
    assert kernel_store.load_order(e89, 12020) == ["cubin"]  # minor-version compatible; PTX 8.5 too new
    assert kernel_store.load_order(e89, 12060) == ["cubin", "ptx"]
    assert kernel_store.load_order({k: v for k, v in e89.items() if k != "ptxas_cuda"}, 12060) == ["cubin", "ptx"]


def test_kernel_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("SMPLER_KERNEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "smpler_deploy" / f"kernels-triton{abi.TRITON_VERSION_PIN}"
    assert kernel_store.resolve_kernel_dir() == cache
    monkeypatch.setenv("SMPLER_KERNEL_DIR", str(tmp_path / "env"))  # the commands' default, not the library's
    assert kernel_store.resolve_kernel_dir() == cache
    assert kernel_store.resolve_kernel_dir(tmp_path / "flag") == tmp_path / "flag"  # --kernel-dir / -o wins


def test_check_kernels_for(built, tmp_path):
    out, _ = built
    assert kernel_store.check_kernels_for(out, 89, ["local_attention", "global_attention"])["kernels"]
    with pytest.raises(SmplerError, match=rf"e\.engine: no local_attention kernel for this GPU \(SM86\) in {out}; "
                                          rf"build it with `smpler-aot --sm 86 -o {out}`"):
        kernel_store.check_kernels_for(out, 86, ["local_attention"], "e.engine")
    with pytest.raises(SmplerError, match=r"no kernels for SM100 .*`no_plugins`"):
        kernel_store.check_kernels_for(out, 100, ["local_attention"], "e.engine")
    with pytest.raises(SmplerError, match=rf"no compiled attention kernels; run `smpler-aot -o {tmp_path}`"):
        kernel_store.check_kernels_for(tmp_path, 89, ["local_attention"])
    (tmp_path / "index.json").write_text(json.dumps({"format": 1, "kernels": []}))  # before ptxas/PTX records
    with pytest.raises(SmplerError, match=r"format 1, this smpler-deploy reads format 2; rerun `smpler-aot"):
        kernel_store.load_index(tmp_path)


def test_variant_checks_refuse_what_the_target_or_the_plugins_cannot_run(built):
    """Shared memory over the target's opt-in limit (sm_75 64 KiB, sm_86/89/120 99 KiB, sm_80/87 163 KiB, sm_90
    227 KiB) and a PTX .entry whose parameters differ from the index's args are refused at AOT time."""
    out, index = built
    e = next(x for x in index["kernels"] if x["kernel"] == "global_attention" and x["sm"] == 89)
    ptx = (out / e["ptx"]).read_text()
    aot.check_variant(e, ptx)
    for sm, limit in ((75, 64), (80, 163), (86, 99), (87, 163), (89, 99), (90, 227), (120, 99)):
        aot.check_variant(dict(e, sm=sm, shared=limit * 1024), ptx)
        with pytest.raises(SmplerError, match=rf"sm_{sm}: needs {limit * 1024 + 1} B of shared memory per block; "
                                              rf"sm_{sm} allows {limit * 1024} B with the opt-in"):
            aot.check_variant(dict(e, sm=sm, shared=limit * 1024 + 1), ptx)
    with pytest.raises(SmplerError, match=r"PTX \.entry global_attention_kernel takes 14 parameters .* the index "
                                          r"lists 13"):
        aot.check_variant(dict(e, args=e["args"][:-1]), ptx)
    wrong = [dict(a, type="i64") if a["name"] == "M" else a for a in e["args"]]  # a 32-bit scalar listed as 64
    with pytest.raises(SmplerError, match="the plugins would pass the wrong arguments"):
        aot.check_variant(dict(e, args=wrong), ptx)
    with pytest.raises(SmplerError, match="has no .entry nope"):
        aot.check_variant(dict(e, entry_name="nope"), ptx)
