"""smpler-export's command line, in process: bad input fails with one `error:` line and leaves no files behind.

One real export (fp32, fidelity on) checks the written graph, the printed fidelity table and the fidelity JSON.
"""

from __future__ import annotations

import json
import os

import pytest

from smpler_deploy.cli.export import main


def listing(d) -> list[str]:
    return sorted(os.listdir(d))


def run_fail(capsys, d, argv, *names):
    """main(argv) must fail: non-zero, one `error:` line naming each of `names`, directory `d` unchanged."""
    before = listing(d)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and rc == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for n in names:
        assert str(n) in errors[0], errors[0]
    assert listing(d) == before, "partial files left behind"
    return errors[0]


def test_calib_dir_missing(tmp_path, capsys):
    missing = tmp_path / "no_such_dir"
    run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(missing), "-o", str(tmp_path / "m.onnx")],
             "--calib", missing)


def test_calib_not_a_directory(tmp_path, capsys):
    f = tmp_path / "crops.txt"
    f.write_text("not a directory\n")
    line = run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(f), "-o", str(tmp_path / "m.onnx")],
                    "--calib", f)
    assert "not a directory" in line


def test_calib_dir_without_usable_images(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "readme.txt").write_text("no images here\n")
    (calib / "broken.jpg").write_bytes(b"this is not a jpeg")
    (calib / "empty.png").write_bytes(b"")
    out = tmp_path / "m.onnx"
    before_calib = listing(calib)
    line = run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(calib), "-o", str(out)],
                    "--calib", calib)
    assert "no usable images" in line
    assert listing(calib) == before_calib


def test_unknown_precision_is_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--precision", "int4", "-o", str(tmp_path / "m.onnx")])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--precision" in errors[0] and "int4" in errors[0], err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("spec,why", [("1:x:8", "positive integers"), ("1:2", "positive integers"),
                                      ("0:1:8", "positive integers"), ("8:4:1", "MIN <= OPT <= MAX"),
                                      ("4:8:2", "MIN <= OPT <= MAX")])
def test_bad_batch_spec(tmp_path, capsys, spec, why):
    line = run_fail(capsys, tmp_path, ["--batch", spec, "-o", str(tmp_path / "m.onnx")], "--batch", spec)
    assert why in line


def test_output_in_missing_directory(tmp_path, capsys):
    out = tmp_path / "missing" / "m.onnx"
    line = run_fail(capsys, tmp_path, ["-o", str(out)], "-o", out)
    assert "does not exist" in line
    assert not (tmp_path / "missing").exists()


def test_existing_output_without_force_is_untouched(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    mtime = out.stat().st_mtime_ns
    line = run_fail(capsys, tmp_path, ["-o", str(out)], "-o", out, "--force")
    assert "exists" in line
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == mtime


def test_cli_fp32_export_with_fidelity(cli_fp32_export):
    """The one real CLI export (conftest's session fixture: the fp32 graph every other test reads): graph +
    fidelity table on stdout + fidelity JSON beside it, nothing else."""
    import onnx

    cap, out = cli_fp32_export, cli_fp32_export.path
    assert cap.rc == 0, cap.err
    assert "error:" not in cap.err
    assert f"wrote {out}" in cap.out
    assert "fidelity of smpler.onnx vs PyTorch fp32" in cap.out and "vertices max (mm)" in cap.out
    fjson = out.with_name("smpler.onnx.fidelity.json")
    assert str(fjson) in cap.out
    assert cap.listing == ["smpler.onnx", "smpler.onnx.fidelity.json"]  # no temp files left
    fid = json.loads(fjson.read_text())
    assert fid["finite"] and fid["batch"] == 4 and fid["vertices"]["max_mm"] < 0.01
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["precision"] == "fp32" and meta["variant"] == "smpler"


# ---------------------------------------------------------------- flags and outputs checked before work


@pytest.fixture
def no_work(monkeypatch):
    """Loading the model is the first piece of work: a refusal must come before it."""
    import smpler_deploy.model.checkpoint as S

    def refuse(*a, **k):
        raise AssertionError("the model was loaded: validation came too late")

    monkeypatch.setattr(S, "load_model", refuse)


def test_output_is_a_directory(tmp_path, capsys, no_work):
    (tmp_path / "d.onnx").mkdir()
    line = run_fail(capsys, tmp_path, ["-o", str(tmp_path / "d.onnx")], "-o", tmp_path / "d.onnx")
    assert "is a directory" in line


def test_output_under_a_regular_file(tmp_path, capsys, no_work):
    """Fails for root too (permission bits do not): the parent is a file."""
    (tmp_path / "f").write_text("x")
    line = run_fail(capsys, tmp_path, ["-o", str(tmp_path / "f" / "m.onnx")], "-o")
    assert "is not a directory" in line


def test_engine_output_under_missing_directory(tmp_path, capsys, no_work):
    pytest.importorskip("tensorrt_rtx")
    line = run_fail(capsys, tmp_path, ["--format", "engine", "-o", str(tmp_path / "nope" / "m.engine")], "-o")
    assert "does not exist" in line


@pytest.mark.parametrize("argv,names", [
    (["--format", "engine", "--sm", "99"], ["--sm 99", "not a TensorRT-RTX target"]),
    (["--format", "engine", "--sm", "8.9.9"], ["--sm 8.9.9", "expected a compute capability"]),
    (["--format", "engine", "--precision", "int8", "--target", "cpu"], ["int8-cpu is ONNX Runtime's layout"]),
    (["--target", "cpu"], ["--target cpu: applies to --precision int8 only"]),
    (["--sm", "89"], ["--sm: applies to --format engine only"]),
    (["--format", "engine", "--mem-pool-size", "workspace:lots"], ["--mem-pool-size workspace:lots"]),
])  # fmt: skip
def test_engine_flags_fail_before_export(tmp_path, capsys, no_work, argv, names):
    """Today `--sm 99` failed after a 144 s export and left x.onnx behind."""
    if "engine" in argv:
        pytest.importorskip("tensorrt_rtx")
    out = tmp_path / ("x.engine" if "engine" in argv else "x.onnx")
    run_fail(capsys, tmp_path, [*argv, "-o", str(out)], *names)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_smpler import tiny_smpler_onnx

    d = tmp_path_factory.mktemp("tiny")
    return {"fp32": tiny_smpler_onnx(d / "fp32.onnx"), "int8cpu": tiny_smpler_onnx(d / "c.onnx", "int8", "cpu"),
            "foreign": tiny_smpler_onnx(d / "foreign.onnx", smpler=False)}


@pytest.mark.parametrize("graph,extra,names", [
    ("fp32", ["--precision", "fp16"], ["--precision fp16", "is a fp32 graph"]),
    ("int8cpu", [], ["int8-cpu is ONNX Runtime's layout"]),
    ("foreign", [], ["not an SMPLer graph"]),
    ("fp32", ["--calib", "crops"], ["--calib: applies when exporting"]),
    ("fp32", ["--plugins"], ["--plugins: applies when exporting"]),
])  # fmt: skip
def test_engine_from_onnx_refusals(tmp_path, capsys, tiny, graph, extra, names):
    pytest.importorskip("tensorrt_rtx")
    argv = ["--format", "engine", "--onnx", str(tiny[graph]), *extra, "-o", str(tmp_path / "x.engine")]
    run_fail(capsys, tmp_path, argv, *names)


def test_engine_from_onnx_with_sm_spellings(tmp_path, capsys, tiny):
    """`--sm 8.9` and `--sm sm_86` are accepted and normalized; the precision comes from the graph."""
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "t.engine"
    rc = main(["--format", "engine", "--onnx", str(tiny["fp32"]), "--sm", "8.9", "--sm", "sm_86", "--batch", "1:1:2",
               "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    m = json.loads((tmp_path / "t.engine.json").read_text())
    assert m["target"]["sms"] == [89, 86] and m["precision"] == "fp32"
    assert listing(tmp_path) == ["t.engine", "t.engine.json", "t.engine.layers.json"]


def test_ctrl_c_during_engine_build_keeps_nothing(tmp_path, capsys, tiny, monkeypatch):
    """The CLI builds in a child process (TensorRT checks its progress monitor only between steps, and one step
    of the SMPLer build runs ~40 s): a real SIGINT, sent from another thread once the build has started, stops
    the command with exit 130, the child killed and nothing kept."""
    pytest.importorskip("tensorrt_rtx")
    import os
    import signal
    import threading

    import smpler_deploy.cli.export as X

    sent = threading.Event()
    children = []
    real_popen = __import__("subprocess").Popen

    def popen(*a, **k):
        children.append(real_popen(*a, **k))
        return children[-1]

    def say(msg):
        print(msg, file=__import__("sys").stderr)
        if msg.startswith("[2/3]") and not sent.is_set():  # the child is building now
            threading.Thread(target=lambda: (os.kill(os.getpid(), signal.SIGINT), sent.set())).start()
            sent.wait(30)

    monkeypatch.setattr(X, "say", say)
    monkeypatch.setattr("subprocess.Popen", popen)
    rc = main(["--format", "engine", "--onnx", str(tiny["fp32"]), "-o", str(tmp_path / "t.engine")])
    err = capsys.readouterr().err
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted: nothing written"
    assert "[3/3]" not in err and "wrote" not in err
    assert len(children) == 1 and children[0].poll() is not None  # the build process is gone
    assert listing(tmp_path) == []  # no engine, manifest, layers, staging directory or lock


def test_interrupt_after_the_graph_was_written_removes_it(tmp_path, capsys, monkeypatch):
    """Ctrl-C after the ONNX file is complete (here: during the fidelity check) keeps nothing, and says so."""
    import smpler_deploy.export.onnx_export as E
    import smpler_deploy.model.checkpoint as S
    from smpler_deploy.fileio import write_text_atomic

    class Model:
        info = {}

    monkeypatch.setattr(S, "load_model", lambda *a, **k: Model())

    def fake_export(path, **kw):
        write_text_atomic(path, "graph")
        return {"report": {"nodes": 1}, "seconds": 0.0}

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(E, "export_onnx", fake_export)
    monkeypatch.setattr(E, "measure_fidelity", interrupted)
    out = tmp_path / "m.onnx"
    assert main(["-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"error: interrupted: nothing written ({out} removed)" in err
    assert listing(tmp_path) == []


HOLDER = """
import sys, time
from smpler_deploy.fileio import outputs
with outputs(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_concurrent_export_to_the_same_output_fails_before_work(tmp_path, capsys, no_work):
    """Two exports to one -o cannot both succeed (today the loser printed the winner's fidelity as its own)."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "m.onnx"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "holding"
        rc = main(["-o", str(out)])
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    err = capsys.readouterr().err
    assert rc == 2 and f"another process (pid {p.pid}) is writing m.onnx" in err, err


@pytest.mark.parametrize("prog", ["export", "bench", "demo", "run"])
def test_argparse_errors_are_one_line(prog, capsys):
    import importlib

    cli = importlib.import_module(f"smpler_deploy.cli.{prog}")
    with pytest.raises(SystemExit) as ei:
        cli.main(["--no-such-flag"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: smpler-{prog}: "), err


def test_demo_threads_zero(tmp_path, capsys):
    from smpler_deploy.cli.demo import main as demo

    assert demo(["photo.png", "--threads", "0", "--out", str(tmp_path / "o.png")]) == 2
    assert capsys.readouterr().err == "error: --threads 0: expected a positive integer\n"


# ---------------------------------------------------------------- the fidelity gate (--max-error-mm)


@pytest.mark.parametrize("argv,names", [
    (["--max-error-mm", "5"], ["--max-error-mm 5", "MEAN,MAX"]),
    (["--max-error-mm", "a,b"], ["--max-error-mm a,b", "MEAN,MAX"]),
    (["--max-error-mm", "10,5"], ["--max-error-mm 10,5", "0 < MEAN <= MAX"]),
    (["--max-error-mm", "nan,5"], ["--max-error-mm nan,5", "finite"]),
    (["--max-error-mm", "0,5"], ["--max-error-mm 0,5", "0 < MEAN <= MAX"]),
    (["--max-error-mm", "1,2", "--no-fidelity"], ["--max-error-mm", "--no-fidelity"]),
    (["--max-error-mm", "1,2", "--plugins"], ["--max-error-mm", "--plugins"]),
    (["--max-error-mm", "1,2", "--format", "triton"], ["--max-error-mm", "--format triton"]),
])  # fmt: skip
def test_max_error_flag_refused_before_work(tmp_path, capsys, no_work, argv, names):
    run_fail(capsys, tmp_path, argv + ["-o", str(tmp_path / "m.onnx")], *names)


def test_max_error_flag_refused_with_onnx(tmp_path, capsys, no_work):
    """--onnx graphs are not re-measured: a gate would silently check nothing."""
    pytest.importorskip("tensorrt_rtx")
    g = tmp_path / "g.onnx"
    g.write_bytes(b"")  # never read: the flag is refused first
    run_fail(capsys, tmp_path, ["--format", "engine", "--onnx", str(g), "--max-error-mm", "1,2",
                                "-o", str(tmp_path / "m.engine")], "--max-error-mm")


@pytest.mark.slow  # a real export + fidelity run: ~20 s on 2 idle cores, 60 s under load
def test_fidelity_gate_failure_keeps_nothing(tmp_path, capsys):
    """A real fp32 export measured against an impossible limit: exit 2, one line with measured vs limit, no files."""
    out = tmp_path / "smpler.onnx"
    line = run_fail(capsys, tmp_path, ["--precision", "fp32", "--max-error-mm", "0.00001,0.00001", "-o", str(out)],
                    out, "--max-error-mm", "exceeds the limit 1e-05 / 1e-05 mm")
    assert "vertex error mean" in line and "nothing written" in line
    assert listing(tmp_path) == []
