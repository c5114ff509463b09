"""Flags parsed once into typed values (Precision, --sm, ExportSpec) and the SMPLer-artifact checks; every
refusal is one line and comes before any work."""

from __future__ import annotations

import re

import pytest

from smpler_deploy.cli.export_flags import export_spec, precision_from_flags
from smpler_deploy.engine.targets import parse_sm, parse_sms
from smpler_deploy.errors import OptionError, SmplerError
from smpler_deploy.precision import GRAPH_NAMES, NO_GRAPH, NOT_BUILDABLE, Precision


@pytest.mark.parametrize("text,kind,target,name", [
    ("fp32", "fp32", None, "fp32"), ("FP16", "fp16", None, "fp16"), ("int8", "int8", "trt", "int8"),
    ("int8-trt", "int8", "trt", "int8"), ("int8-cpu", "int8", "cpu", "int8-cpu"), ("int8_cpu", "int8", "cpu", "int8-cpu"),
])  # fmt: skip
def test_precision_parse_and_report_spelling(text, kind, target, name):
    p = Precision.parse(text)
    assert (p.kind, p.target, p.name, str(p)) == (kind, target, name, name)
    assert Precision.parse(p.name) == p  # the report spelling parses back to the same value
    assert p.buildable == (target != "cpu")


def test_precision_refusals():
    with pytest.raises(SmplerError, match=r"^--precisions int4: expected one of fp32, fp16, int8, int8-cpu, bf16$"):
        Precision.parse("int4", "--precisions")
    with pytest.raises(SmplerError, match=r"^--onnx bf16: expected one of fp32, fp16, int8, int8-cpu$"):
        Precision.parse("bf16", "--onnx", GRAPH_NAMES)  # a caller takes only the names it can run
    with pytest.raises(SmplerError, match=r"^--target cpu: applies to --precision int8 only \(got --precision fp16\)$"):
        precision_from_flags("fp16", "cpu")
    assert precision_from_flags("int8", None) == Precision("int8", "trt")
    assert precision_from_flags(None, None) == Precision("fp32")
    with pytest.raises(SmplerError):
        Precision("fp16", "cpu")


def test_bf16_is_a_torch_only_precision():
    """bf16 is one more value of the type: torch runs it; no graph carries it, so nothing builds it."""
    bf16 = Precision.parse("BF16")
    assert (bf16.kind, bf16.name, bf16.runs_in_torch, bf16.in_graph, bf16.buildable) == ("bf16", "bf16", True, False,
                                                                                          False)
    assert bf16.not_buildable_reason == NO_GRAPH and Precision.parse("int8-cpu").not_buildable_reason.startswith(
        NOT_BUILDABLE)
    with pytest.raises(SmplerError, match=f"^x.onnx: {re.escape(NO_GRAPH)}$"):
        bf16.require_buildable("x.onnx")
    int8 = Precision.parse("int8")
    assert not int8.runs_in_torch and Precision.parse("fp16").runs_in_torch
    with pytest.raises(SmplerError, match=r"^--precision int8: the torch backend runs fp32, fp16, bf16 \(int8 is a "
                                          r"graph precision"):
        int8.require_torch("--precision")
    with pytest.raises(SmplerError, match="metadata precision 'bf16'"):  # no exported graph says bf16
        Precision.from_metadata({"precision": "bf16"}, "x.onnx")
    with pytest.raises(SmplerError, match=r"^--precision bf16: expected one of fp32, fp16, int8$"):
        precision_from_flags("bf16", None)  # smpler-export writes graphs only
    assert Precision.parse(bf16) is bf16  # typed values pass through the parser unchanged


def test_precision_from_metadata():
    assert Precision.from_metadata({"precision": "int8", "int8_target": "cpu"}).name == "int8-cpu"
    assert Precision.from_metadata({"precision": "int8"}).name == "int8"  # graphs from before int8_target
    with pytest.raises(SmplerError, match="metadata precision None"):
        Precision.from_metadata({}, "x.onnx")


@pytest.mark.parametrize("text", ["89", "8.9", "sm_89", "SM89", "sm89", " 89 ", 89])
def test_sm_spellings(text):
    assert parse_sm(text) == 89


@pytest.mark.parametrize("text", ["eighty-nine", "8.9.1", "sm_", "", "-89"])
def test_sm_garbage_is_one_line(text):
    with pytest.raises(OptionError) as e:  # the library names the field; the commands name --sm
        parse_sm(text)
    assert e.value.field == "sms" and "\n" not in str(e.value)
    assert e.value.named("--sm").startswith(f"--sm {text}: expected a compute capability")


def test_parse_sms_lists():
    assert parse_sms(["89,86", "8.9", "sm_120"], [75, 86, 89, 120]) == [89, 86, 120]
    assert parse_sms(None) is None
    with pytest.raises(OptionError, match=r"^sms 99: not a TensorRT-RTX target; valid: 86, 89$"):
        parse_sms(["89", "99"], [86, 89])


def _ns(argv):
    from smpler_deploy.cli.export import build_parser

    return build_parser().parse_args(argv)


def test_export_spec_defaults(tmp_path):
    s = export_spec(_ns(["-o", str(tmp_path / "m.onnx")]))
    assert s.format == "onnx" and s.precision == Precision("fp32") and s.batch == (1, 1, 8)
    assert [str(p) for p, _ in s.output_files()] == [str(tmp_path / "m.onnx"), str(tmp_path / "m.onnx.fidelity.json")]


def test_export_spec_engine(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    s = export_spec(_ns(["--format", "engine", "--precision", "int8", "--sm", "8.9", "--sm", "sm_86",
                         "-o", str(tmp_path / "m.engine")]))
    assert s.precision == Precision("int8", "trt") and s.engine.sms == [89, 86]
    assert s.onnx == tmp_path / "m.onnx" and not s.onnx_given
    names = sorted(p.name for p, _ in s.output_files())
    assert names == ["m.engine", "m.engine.json", "m.engine.layers.json", "m.onnx", "m.onnx.fidelity.json"]


@pytest.mark.parametrize("argv,msg", [
    (["--target", "cpu"], "--target cpu: applies to --precision int8 only"),
    (["--sm", "89"], "--sm: applies to --format engine only"),
    (["--timing-cache", "t.cache"], "--timing-cache: applies to --format engine only"),
    (["--precision", "fp16", "--calib", "."], "--calib applies to --precision int8 only"),
    (["--precision", "int8", "--plugins"], "--plugins with --precision int8"),
    (["--format", "engine", "--precision", "int8", "--target", "cpu"], "--target cpu: int8-cpu is ONNX Runtime's layout"),
    (["--format", "engine", "--sm", "99"], "--sm 99: not a TensorRT-RTX target"),
    (["--format", "engine", "--sm", "eighty"], "--sm eighty: expected a compute capability"),
    (["--format", "engine", "--builder-optimization-level", "9"], "--builder-optimization-level 9: expected 0..5"),
    (["--format", "engine", "--mem-pool-size", "lots"], "--mem-pool-size lots"),
    (["--format", "engine", "--hardware-compatibility-level", "turing"], "--hardware-compatibility-level turing"),
])  # fmt: skip
def test_export_spec_refusals(tmp_path, argv, msg):
    if "engine" in argv:
        pytest.importorskip("tensorrt_rtx")
    out = "m.engine" if "engine" in argv else "m.onnx"
    with pytest.raises(SmplerError) as e:
        export_spec(_ns([*argv, "-o", str(tmp_path / out)]))
    assert msg in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- what a file is (artifacts)


def test_onnx_info_refuses_foreign_graphs(tmp_path):
    from tiny_smpler import tiny_smpler_onnx

    from smpler_deploy.artifacts import onnx_info

    info = onnx_info(tiny_smpler_onnx(tmp_path / "ok.onnx", "fp16"))
    assert info.variant == "smpler" and info.precision == Precision("fp16")
    with pytest.raises(SmplerError, match="not an SMPLer graph .no smpler-deploy metadata"):
        onnx_info(tiny_smpler_onnx(tmp_path / "foreign.onnx", smpler=False))
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(SmplerError, match="not a readable ONNX model"):
        onnx_info(tmp_path / "junk.onnx")
    with pytest.raises(SmplerError, match="file not found"):
        onnx_info(tmp_path / "missing.onnx")


def test_onnx_info_refuses_wrong_io(tmp_path):
    """SMPLer metadata on a graph with other inputs/outputs (e.g. a hand-edited file) is still refused."""
    import onnx

    from smpler_deploy.artifacts import onnx_info
    from tiny_smpler import tiny_smpler_onnx

    p = tiny_smpler_onnx(tmp_path / "g.onnx")
    m = onnx.load(str(p))
    m.graph.output.pop()  # drop "cam"
    onnx.save(m, str(p))
    with pytest.raises(SmplerError, match=r"not an SMPLer graph \(inputs \['images'\], outputs"):
        onnx_info(p)


# ---------------------------------------------------------------- one table of which flag applies where


@pytest.mark.parametrize("extra,flag", [(["--calib", "crops"], "--calib"), (["--variant", "smpler-l"], "--variant"),
                                        (["--checkpoint", "w.pt"], "--checkpoint"), (["--target", "cpu"], "--target")])
def test_export_only_flags_refused_alike_for_engine_and_triton(tmp_path, capsys, extra, flag):
    """With --onnx nothing is exported: --format engine and --format triton refuse an export flag in one wording
    (the triton path had its own table and its own sentence)."""
    from smpler_deploy.cli.export import main

    graph = tmp_path / "g.onnx"
    errs = []
    for fmt, out in (("engine", "x.engine"), ("triton", "repo")):
        assert main(["--format", fmt, "--onnx", str(graph), *extra, "-o", str(tmp_path / out)]) == 2
        errs.append(capsys.readouterr().err.strip())
    want = f"error: {flag}: applies when exporting; --onnx {graph} is already exported (its metadata says how)"
    assert errs == [want, want]
    assert list(tmp_path.iterdir()) == []


def test_flag_table_names_real_flags_and_refuses_each_outside_its_formats(tmp_path):
    from smpler_deploy.cli.export import build_parser
    from smpler_deploy.cli.export_flags import FLAGS, FORMATS

    parser = build_parser()
    options = {a.dest: a.option_strings for a in parser._actions}
    for key, f in FLAGS.items():
        assert f.flag in options[key], key
        for fmt in sorted(set(FORMATS) - set(f.formats)):
            a = parser.parse_args(["--format", fmt, "-o", str(tmp_path / "x.onnx")])
            setattr(a, key, True)
            with pytest.raises(SmplerError) as e:
                export_spec(a)
            assert str(e.value).startswith(f"{f.flag}: applies to --format {' or '.join(f.formats)} only"), (key, fmt)
