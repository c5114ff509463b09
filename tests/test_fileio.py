"""The one output writer: destination checks before work, exclusive claims (two writers of one name cannot both
succeed, across threads and processes), all-or-nothing transactions, stale scratch files reclaimed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.fileio import (atomic_path, check_output_dir, check_output_path, interrupted_message, outputs,
                                  write_text_atomic)


def listing(d):
    return sorted(os.listdir(d))


# ---------------------------------------------------------------- checks before work


def test_directory_as_target(tmp_path):
    with pytest.raises(SmplerError, match=r"^`out` .*: is a directory; expected a file name$"):
        check_output_path(tmp_path)


def test_parent_missing(tmp_path):
    with pytest.raises(SmplerError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.onnx")


def test_parent_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SmplerError, match=r"file is not a directory"):
        check_output_path(f / "x.onnx")
    with pytest.raises(SmplerError, match=r"exists and is not a directory"):
        check_output_dir(f, "--out")


def test_not_writable_directory(tmp_path, monkeypatch):
    """Root ignores permission bits, so the writable check is exercised through os.access."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(SmplerError, match=r"^--out .*: directory .* is not writable$"):
        check_output_path(tmp_path / "x.onnx", flag="--out")
    with pytest.raises(SmplerError, match="is not writable"):
        check_output_dir(tmp_path / "report", "--out")
    with pytest.raises(SmplerError, match="is not writable"):
        with outputs(tmp_path / "x.onnx"):
            raise AssertionError("the block must not run")
    assert listing(tmp_path) == []


def test_existing_file_needs_force(tmp_path):
    (tmp_path / "x.onnx").write_text("old")
    with pytest.raises(SmplerError, match=r"file exists \(pass `force` to overwrite\)"):
        with outputs(tmp_path / "x.onnx"):
            raise AssertionError("the block must not run")
    with outputs(tmp_path / "x.onnx", force=True):
        write_text_atomic(tmp_path / "x.onnx", "new")
    assert (tmp_path / "x.onnx").read_text() == "new" and listing(tmp_path) == ["x.onnx"]


# ---------------------------------------------------------------- transactions


def test_multi_file_commit_together(tmp_path):
    a, b = tmp_path / "m.engine", tmp_path / "m.engine.json"
    with outputs(a, b):
        write_text_atomic(a, "engine")
        write_text_atomic(b, "{}")
    assert listing(tmp_path) == ["m.engine", "m.engine.json"]  # no temp or lock files left


@pytest.mark.parametrize("exc", [SmplerError("boom"), KeyboardInterrupt()])
def test_failure_keeps_nothing(tmp_path, exc):
    a, b = tmp_path / "x.onnx", tmp_path / "x.engine"
    with pytest.raises(type(exc)) as ei:
        with outputs(a, b):
            write_text_atomic(a, "graph")  # committed ...
            with atomic_path(b) as tmp:
                tmp.write_text("half an engine")
                raise exc  # ... then the second file fails half-way
    assert listing(tmp_path) == []
    assert ei.value.removed == [a] and ei.value.kept == []
    assert interrupted_message(ei.value) == f"interrupted: nothing written ({a} removed)"


def test_failure_under_force_restores_previous_files(tmp_path):
    a, b = tmp_path / "x.engine", tmp_path / "x.engine.json"
    a.write_text("old engine")
    b.write_text("old manifest")
    with pytest.raises(SmplerError):
        with outputs(a, b, force=True):
            write_text_atomic(a, "new engine")
            assert a.read_text() == "new engine"
            raise SmplerError("build failed")
    assert a.read_text() == "old engine" and b.read_text() == "old manifest"
    assert listing(tmp_path) == ["x.engine", "x.engine.json"]


def test_nested_block_joins_outer_transaction(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        with outputs(a):
            with outputs(b):
                write_text_atomic(b, "inner")
            write_text_atomic(a, "outer")
            raise KeyboardInterrupt
    assert listing(tmp_path) == []


def test_output_dir_created_and_removed_on_failure(tmp_path):
    d = tmp_path / "report"
    with pytest.raises(SmplerError):
        with outputs(dirs=[d]):
            assert d.is_dir()
            write_text_atomic(d / "report.json", "{}")
            raise SmplerError("no")
    assert listing(tmp_path) == []


def test_no_clobber_without_force(tmp_path):
    """A file that appears at the final name while we write (someone not using this writer) is never replaced."""
    out = tmp_path / "x.onnx"
    with pytest.raises(SmplerError, match="appeared while it was being written"):
        with outputs(out):
            with atomic_path(out) as tmp:
                tmp.write_text("ours")
                out.write_text("theirs")
    assert out.read_text() == "theirs" and listing(tmp_path) == ["x.onnx"]


# ---------------------------------------------------------------- concurrent writers


def test_two_threads_cannot_both_write_one_name(tmp_path):
    out = tmp_path / "x.onnx"
    holding, release = threading.Event(), threading.Event()
    results = {}

    def first():
        with outputs(out):
            holding.set()
            release.wait(30)
            write_text_atomic(out, "first")
        results["first"] = "ok"

    t = threading.Thread(target=first)
    t.start()
    assert holding.wait(30)
    try:
        with pytest.raises(SmplerError, match=r"another process \(pid \d+\) is writing x.onnx"):
            with outputs(out):
                write_text_atomic(out, "second")
        with pytest.raises(SmplerError, match="another process"):
            write_text_atomic(out, "library call")  # claims too
    finally:
        release.set()
        t.join()
    assert results == {"first": "ok"} and out.read_text() == "first"
    assert listing(tmp_path) == ["x.onnx"]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from smpler_deploy.fileio import outputs, atomic_path
    out = Path(sys.argv[1])
    with outputs(out):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            print("holding", flush=True)
            time.sleep(120)
""")


def _holder(out):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_other_process_holds_the_name_then_is_killed(tmp_path):
    out = tmp_path / "x.onnx"
    p = _holder(out)
    try:
        with pytest.raises(SmplerError, match=rf"another process \(pid {p.pid}\) is writing x.onnx"):
            with outputs(out):
                raise AssertionError("the block must not run")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    names = listing(tmp_path)
    assert ".x.onnx.lock" in names and any(n.endswith(".tmp") for n in names)  # what a killed run leaves
    with outputs(out):  # the kernel dropped the lock; the stale temp is reclaimed
        write_text_atomic(out, "mine")
    assert listing(tmp_path) == ["x.onnx"] and out.read_text() == "mine"


def test_stale_scratch_of_live_process_is_kept(tmp_path):
    out = tmp_path / "x.onnx"
    live = tmp_path / f".x.onnx.{os.getppid()}.abc.tmp"  # our parent is alive: not ours to remove
    live.write_text("")
    with outputs(out):
        write_text_atomic(out, "y")
    assert live.exists()


# ---------------------------------------------------------------- ONNX with external data


def _onnx_model():
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def test_onnx_graph_and_its_report_commit_together(tmp_path):
    """ONNX files are written the way the exporters write them (`onnx.save` into `atomic_path`'s temp file, inside
    the command's `outputs` block): a failure after the graph is complete (the fidelity check) keeps neither file;
    a success leaves the complete graph, which loads and runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    out, report = tmp_path / "m.onnx", tmp_path / "m.onnx.fidelity.json"
    with pytest.raises(SmplerError, match="fidelity"):
        with outputs(out, report):
            with atomic_path(out, suffix=".onnx") as tmp:
                onnx.save(_onnx_model(), str(tmp))
            assert out.is_file()
            raise SmplerError("fidelity check failed")
    assert listing(tmp_path) == []
    with outputs(out, report):
        with atomic_path(out, suffix=".onnx") as tmp:
            onnx.save(_onnx_model(), str(tmp))
        write_text_atomic(report, "{}")
    assert listing(tmp_path) == ["m.onnx", "m.onnx.fidelity.json"]
    y = ort.InferenceSession(str(out)).run(None, {"x": np.ones((1, 64), np.float32)})[0]
    assert y[0, 0] == np.arange(0, 4096, 64).sum()
