"""Session-wide artifacts: the default model and its ONNX graphs are built once per test run.

The default run is spread over the CPU cores by pytest-xdist (pyproject's addopts). Each worker is a process with
its own session fixtures, so every artifact here is built under a file lock in one directory the workers share
(`_shared`): the first worker to need it builds it, the others wait and read it. Each worker keeps torch to one
thread: two workers with torch's default (one thread per core) oversubscribe the cores, and OpenMP's spinning
threads then slow every test several times over; the commands the tests start inherit it (OMP_NUM_THREADS).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))  # test oracles (official_ops)

# One fresh model cache per test run (smpler_deploy.cache), inherited by xdist's workers and by the commands tests
# start as subprocesses: the default model is built once per run and then read, and no test depends on what a
# user's cache holds. The controller (or a run without xdist) makes it; workers find it in their environment.
_CACHE = os.environ.get("SMPLER_TEST_RUN_CACHE")
if not _CACHE:
    _CACHE = tempfile.mkdtemp(prefix="smpler-test-cache-")
    os.environ["SMPLER_TEST_RUN_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["SMPLER_DEPLOY_CACHE"] = _CACHE

if "PYTEST_XDIST_WORKER" in os.environ:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and the commands tests start as subprocesses


def _shared(tmp_path_factory) -> Path:
    """The run's directory all workers share: under xdist each worker's basetemp is a child of it."""
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "shared"
    d.mkdir(exist_ok=True)
    return d


def _built_once(shared: Path, name: str) -> FileLock:
    """The run-wide lock of artifact `name`; lock files sit in `shared`, beside the artifacts' directories."""
    return FileLock(str(shared / f"{name}.lock"))


@pytest.fixture(scope="session")
def default_model(tmp_path_factory):
    from smpler_deploy import load_model

    with _built_once(_shared(tmp_path_factory), "default-model"):  # one worker builds the cache entry, others read it
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
    d = _shared(tmp_path_factory) / "onnx"
    d.mkdir(exist_ok=True)
    return d


def _export(default_model, onnx_dir, name, precision: str, **kw):
    from smpler_deploy.export.onnx_export import export_onnx
    from smpler_deploy.precision import Precision

    path = onnx_dir / name
    with _built_once(onnx_dir.parent, name):
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

    shared = _shared(tmp_path_factory)
    d, record = shared / "cli-fp32", shared / "cli-fp32.json"  # what the command did, for the other workers
    with _built_once(shared, "cli-fp32"):
        if not record.exists():
            d.mkdir()
            path, out, err = d / "smpler.onnx", io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(["--precision", "fp32", "-o", str(path)])
            done = CliExport(rc, path, out.getvalue(), err.getvalue(), sorted(os.listdir(d)))
            record.write_text(json.dumps(asdict(done), default=str))
    return CliExport(**{**json.loads(record.read_text()), "path": d / "smpler.onnx"})


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
