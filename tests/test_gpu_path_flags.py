"""Engine flags of the GPU path, checked on real TensorRT-RTX builds and the real CLI parsers (no GPU needed):
TF32 explicit and recorded, --kernel-dir, kernels refused before a build that would run them, the --sm hint for
GPUs TensorRT-RTX cannot target, and docs/jetson.md spelling only flags the CLI has."""

import re
import shlex
from pathlib import Path

import pytest

from smpler_deploy.errors import SmplerError

trt = pytest.importorskip("tensorrt_rtx")
ROOT = Path(__file__).resolve().parents[1]


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_smpler import tiny_smpler_onnx

    return tiny_smpler_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_flag_reaches_the_builder_and_the_manifest(tiny, tmp_path, monkeypatch, tf32):
    """Polygraphy clears BuilderFlag.TF32 unless told; the build passes it explicitly (default on, as trtexec)."""
    from smpler_deploy.engine.builder import _polygraphy_for, build_engine
    from smpler_deploy.engine.options import EngineOptions

    _polygraphy_for("tensorrt-rtx")  # Polygraphy binds its flavour at first import
    from polygraphy.backend import tensorrt_rtx as prtx

    configs = []
    real = prtx.CreateConfigRTX.call_impl

    def spy(self, builder, network):
        configs.append(real(self, builder, network))
        return configs[-1]

    monkeypatch.setattr(prtx.CreateConfigRTX, "call_impl", spy)
    kw = {} if tf32 else {"tf32": False}
    man = build_engine(tiny, tmp_path / "t.engine", EngineOptions(flavour="tensorrt-rtx", **kw), log=_quiet)
    # the config the engine was built with (read after the build, so after the flag was applied)
    assert [c.get_flag(trt.BuilderFlag.TF32) for c in configs] == [tf32] and man["build"]["options"]["tf32"] is tf32


def test_export_cli_tf32_and_kernel_dir_flags(tmp_path, monkeypatch, capsys):
    from smpler_deploy.cli.export import build_parser, main
    from smpler_deploy.cli.export_flags import export_spec

    a = build_parser().parse_args(["--format", "engine", "--trt", "tensorrt-rtx", "-o", str(tmp_path / "e.engine")])
    assert a.tf32 is True and export_spec(a).engine.tf32 is True
    a = build_parser().parse_args(["--format", "engine", "--trt", "tensorrt-rtx", "--no-tf32", "-o", str(tmp_path / "e.engine")])
    assert export_spec(a).engine.tf32 is False
    monkeypatch.delenv("SMPLER_KERNEL_DIR", raising=False)
    assert main(["--kernel-dir", str(tmp_path / "nokernels"), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --kernel-dir {tmp_path / 'nokernels'}: no index.json there; build the kernels with "
                   f"`smpler-aot -o {tmp_path / 'nokernels'}`"]
    assert not (tmp_path / "x.onnx").exists()


def test_kernel_dir_flag_is_passed_on_not_put_in_the_environment(tmp_path, monkeypatch):
    """--kernel-dir reaches the build and the sessions as an argument; $SMPLER_KERNEL_DIR is only its default."""
    import os

    from trt_standin import write_kernel_index

    from smpler_deploy.cli.export import build_parser
    from smpler_deploy.cli.export_flags import export_spec
    from smpler_deploy.plugins.kernel_store import resolve_kernel_dir

    monkeypatch.delenv("SMPLER_KERNEL_DIR", raising=False)
    kdir = write_kernel_index(tmp_path / "k")
    spec = export_spec(build_parser().parse_args(["--kernel-dir", str(kdir), "-o", str(tmp_path / "x.onnx")]))
    assert spec.kernel_dir == kdir.resolve() and "SMPLER_KERNEL_DIR" not in os.environ
    assert resolve_kernel_dir(spec.kernel_dir) == kdir.resolve()
    monkeypatch.setenv("SMPLER_KERNEL_DIR", str(kdir))  # the default of the flag, not read by the library
    assert export_spec(build_parser().parse_args(["-o", str(tmp_path / "x.onnx")])).kernel_dir == kdir
    assert resolve_kernel_dir(None) != kdir


def test_plugin_kernels_refused_before_a_build_that_runs_them(tmp_path):
    """--trt tensorrt times the plugins on the local GPU: without its kernels the build stops at once."""
    from trt_standin import write_kernel_index

    from smpler_deploy.trt.plugins import register_smpler_plugins

    kdir = write_kernel_index(tmp_path / "k", sms=(89,))
    needed = [{"name": "SmplerLocalAttention"}]
    with pytest.raises(SmplerError, match=rf"^g\.onnx: no local_attention kernel for this GPU \(SM87\) in {kdir}; "
                                          rf"build it with `smpler-aot --sm 87 -o {kdir}`"):
        register_smpler_plugins(trt, "tensorrt-rtx", "g.onnx", needed, kernel_dir=kdir, sm=87)
    assert register_smpler_plugins(trt, "tensorrt-rtx", "g.onnx", needed, kernel_dir=kdir, sm=89)
    assert register_smpler_plugins(trt, "tensorrt-rtx", "g.onnx", needed, kernel_dir=tmp_path, sm=None)  # RTX AOT


@pytest.mark.parametrize("sm,name", [("87", "Jetson Orin"), ("9.0", "Hopper")])
def test_sm_error_says_build_on_device(sm, name):
    from smpler_deploy.engine.targets import parse_sms

    with pytest.raises(SmplerError, match=rf"^sms {re.escape(sm)}: not a TensorRT-RTX target; valid: 86, 89; "
                                          rf"{name} \(SM{sm.replace('.', '')}\) engines are built on the device "
                                          r"itself with `flavour` tensorrt$"):
        parse_sms([sm], [86, 89])


def test_jetson_doc_commands_use_real_flags():
    """Every smpler-export / smpler-aot command in docs/jetson.md parses with the real CLI parsers."""
    from smpler_deploy.cli.export import build_parser

    text = (ROOT / "docs" / "jetson.md").read_text()
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for ln in block.replace("\\\n", " ").splitlines()]
    lines += [span.replace("\n", " ") for span in re.findall(r"`(smpler-export [^`]*)`", text)]  # inline commands
    commands = [shlex.split(ln.split("#")[0])[1:] for ln in lines if ln.strip().startswith("smpler-export ")]
    assert len(commands) >= 3
    parser = build_parser()
    parser.error = lambda msg: pytest.fail(f"docs/jetson.md: {msg}")
    for argv in commands:
        a = parser.parse_args(argv)
        if a.format == "engine":
            assert a.onnx, f"docs/jetson.md: engine build without --onnx: {argv}"
    # inline flags in smpler-export spelling (trtexec's are camelCase) must exist; --fp16/--int8/--best are
    # named only as trtexec flags we never use
    flags = set(re.findall(r"`(--[a-z][a-z0-9-]*)[` ]", text))
    known = {o for action in parser._actions for o in action.option_strings}
    assert flags - known == {"--fp16", "--int8", "--best"}


@pytest.mark.parametrize("cli,argv", [
    ("export", ["-o", "OUT/x.onnx"]),
    ("bench", ["--backends", "torch", "--out", "OUT/rep"]),
    ("demo", ["IMG.png", "--out", "OUT/o.png"]),
])
def test_kernel_dir_flag_in_every_command(cli, argv, tmp_path, capsys, monkeypatch):
    """smpler-export, -bench and -demo take --kernel-dir and check it before any work."""
    import importlib

    monkeypatch.delenv("SMPLER_KERNEL_DIR", raising=False)
    main = importlib.import_module(f"smpler_deploy.cli.{cli}").main
    bad = tmp_path / "nokernels"
    argv = [a.replace("OUT", str(tmp_path)).replace("IMG.png", str(tmp_path / "img.png")) for a in argv]
    assert main([*argv, "--kernel-dir", str(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --kernel-dir {bad}: no index.json there; build the kernels with `smpler-aot -o {bad}`"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
