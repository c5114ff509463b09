"""Session-wide artifacts: the default model and its ONNX graphs are built once per test run."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test oracles (official_ops)

# One fresh model cache per test run (smpler_deploy.cache), inherited by the commands tests start as subprocesses:
# the default model is built once per run and then read, and no test depends on what a user's cache holds.
_CACHE = tempfile.mkdtemp(prefix="smpler-test-cache-")
os.environ["SMPLER_DEPLOY_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def default_model():
    from smpler_deploy import load_model

    return load_model("smpler")


@pytest.fixture
def engine(tmp_path):
    """A TensorRT engine file (manual, trtexec-style CUDA-graph capture) with its manifest, for sessions over the
    recording stand-in (tests/trt_standin.py)."""
    from trt_standin import standin_engine

    return standin_engine(tmp_path, "tensorrt")


@pytest.fixture
def rtx_engine(tmp_path):
    """The same as a TensorRT-RTX engine (the runtime's own CUDA graphs)."""
    from trt_standin import standin_engine

    return standin_engine(tmp_path, "tensorrt-rtx")


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def _export(default_model, onnx_dir, name, precision: str, **kw):
    from smpler_deploy.export.onnx_export import export_onnx
    from smpler_deploy.precision import Precision

    path = onnx_dir / name
    if not path.exists():
        export_onnx(path, model=default_model, precision=Precision.parse(precision), **kw)
    return path


@dataclass(frozen=True)
class CliExport:
    rc: int
    path: Path
    out: str  # what the command printed on stdout / stderr
    err: str
    listing: list[str]  # its output directory right after the command


@pytest.fixture(scope="session")
def cli_fp32_export(tmp_path_factory):
    """`smpler-export --precision fp32 -o smpler.onnx` (fidelity on), run once in process: the fp32 graph every test
    reads is the one the command wrote, and test_export_cli checks what it printed and wrote beside it."""
    from smpler_deploy.cli.export import main

    d = tmp_path_factory.mktemp("cli-fp32")
    path, out, err = d / "smpler.onnx", io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--precision", "fp32", "-o", str(path)])
    return CliExport(rc, path, out.getvalue(), err.getvalue(), sorted(os.listdir(d)))


@pytest.fixture(scope="session")
def onnx_fp32(cli_fp32_export):
    assert cli_fp32_export.rc == 0, cli_fp32_export.err
    return cli_fp32_export.path


@pytest.fixture(scope="session")
def onnx_fp16(default_model, onnx_dir):
    return _export(default_model, onnx_dir, "smpler_fp16.onnx", precision="fp16")


@pytest.fixture(scope="session")
def onnx_int8_trt(default_model, onnx_dir, onnx_fp32):
    # quantizes the session's fp32 graph (what smpler-export wrote) instead of tracing another one
    return _export(default_model, onnx_dir, "smpler_int8_trt.onnx", precision="int8", fp32_graph=onnx_fp32)


@pytest.fixture(scope="session")
def onnx_int8_cpu(default_model, onnx_dir, onnx_fp32):
    return _export(default_model, onnx_dir, "smpler_int8_cpu.onnx", precision="int8-cpu", fp32_graph=onnx_fp32)


@pytest.fixture(scope="session")
def onnx_plugins_fp32(default_model, onnx_dir):
    return _export(default_model, onnx_dir, "smpler_plugins_fp32.onnx", precision="fp32", plugins=True)


@pytest.fixture(scope="session")
def onnx_plugins_fp16(default_model, onnx_dir):
    return _export(default_model, onnx_dir, "smpler_plugins_fp16.onnx", precision="fp16", plugins=True)
