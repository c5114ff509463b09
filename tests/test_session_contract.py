"""The Session contract every backend keeps (`runtime/base.py`): a context manager that closes, no infer after
close, typed `info` (one name and type per fact), `max_batch`, `cuda_graphs`; and the code that reads a session
(smpler-demo, smpler-run, the crop batching) through that contract alone. The TensorRT session runs over the strict
recording stand-in (tests/trt_standin.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from trt_standin import RecordingCudaStandIn

from smpler_deploy.errors import SmplerError
from smpler_deploy.outputs import SMPLOutput
from smpler_deploy.precision import FP32, Precision
from smpler_deploy.runtime.base import Session, SessionInfo
from smpler_deploy.runtime.graphs import GraphState
from smpler_deploy.runtime.tensorrt import TensorRTSession


def images(b):
    return np.random.default_rng(b).standard_normal((b, 3, 224, 224)).astype(np.float32)


def test_every_backend_is_a_context_manager_that_closes(engine, default_model, onnx_fp32):
    from smpler_deploy.runtime import open_session
    from smpler_deploy.runtime.torch_session import TorchSession

    api = RecordingCudaStandIn()
    opens = (lambda: TensorRTSession(engine, api=api), lambda: TorchSession(default_model),
             lambda: open_session("onnxruntime", path=onnx_fp32, threads=1))
    for make in opens:
        with make() as s:
            assert isinstance(s, Session) and s.infer(images(1)).vertices.shape == (1, 6890, 3)
        assert s.closed
        with pytest.raises(SmplerError, match="session is closed") as e:
            s.infer(images(1))
        assert "\n" not in str(e.value)
    assert not api.live_device and not api.live_host and api.names()[-1] == "release"
    api = RecordingCudaStandIn()
    with pytest.raises(SmplerError, match="outside the engine's profile"):
        with TensorRTSession(engine, api=api) as s:
            s.infer(images(5))  # an error inside the block still frees the engine's buffers and stream
    assert s.closed and not api.live_device and api.names()[-1] == "release"


def test_info_is_typed_with_one_name_per_fact(engine, default_model, onnx_fp32):
    """The default model and the graph exported from it report the same facts under the same names and types;
    an engine's manifest records none of them: unknown (None), not guessed."""
    from smpler_deploy.runtime import open_session
    from smpler_deploy.runtime.torch_session import TorchSession

    with TorchSession(default_model) as t, open_session("onnxruntime", path=onnx_fp32, threads=1) as o, \
            TensorRTSession(engine, api=RecordingCudaStandIn()) as e:
        for s in (t, o, e):
            assert isinstance(s.info, SessionInfo)
            with pytest.raises(dataclasses.FrozenInstanceError):
                s.info.untrained = False
        for s in (t, o):
            assert (s.info.variant, s.info.untrained, s.info.standin_body, s.info.checkpoint) == \
                ("smpler", True, True, None)
            assert s.info.device == "cpu" and s.max_batch is None and s.cuda_graphs == GraphState("off", 0)
            assert s.last_device_ms is None  # CPU: no device time
        assert o.info.providers == ("CPUExecutionProvider",) and o.precision == FP32 and t.precision == FP32
        assert e.info == SessionInfo(variant="smpler", device="cuda") and e.precision == Precision("fp16")
        assert all(isinstance(s.precision, Precision) for s in (t, o, e))  # typed, one currency for every backend
        assert e.max_batch == 4  # the stand-in engine's profile: batch 1..4


def test_tensorrt_graph_state_through_the_session(engine, rtx_engine):
    """The one graph policy as the TensorRT session reports it: warm-up, capture, drop on a shape change, off after
    a failed capture; TensorRT-RTX's runtime captures itself; --no-cuda-graphs is off."""
    with TensorRTSession(engine, api=RecordingCudaStandIn(), warmup=2) as s:
        assert s.cuda_graphs == GraphState("capture", 0)
        for _ in range(2):
            s.infer(images(1))
        assert s.cuda_graphs.captured == 0  # still warming up
        s.infer(images(1))
        assert s.cuda_graphs == GraphState("capture", 1)
        s.infer(images(2))  # new shape: the graph is dropped, warm-up restarts
        assert s.cuda_graphs == GraphState("capture", 0)
    assert s.cuda_graphs.captured == 0
    with TensorRTSession(engine, api=RecordingCudaStandIn(fail_capture=True), warmup=1) as s:
        for _ in range(3):
            assert s.infer(images(1)).vertices.shape == (1, 6890, 3)
        assert s.cuda_graphs == GraphState("capture", 0, "RuntimeError: execute_async_v3 returned False under capture")
    with TensorRTSession(rtx_engine, api=RecordingCudaStandIn(), warmup=1) as s:
        s.infer(images(1))
        s.infer(images(1))
        assert s.cuda_graphs == GraphState("runtime", 0)
    with TensorRTSession(engine, api=RecordingCudaStandIn(), cuda_graphs=False) as s:
        assert s.cuda_graphs == GraphState("off", 0)


def _zeros(b):
    z = np.zeros
    return SMPLOutput(z((b, 6890, 3)), z((b, 14, 3)), z((b, 24, 3)), z((b, 24, 2)), z((b, 24, 3, 3)), z((b, 10)),
                      z((b, 3)))


class Capped(Session):
    """A session that takes at most two images per call, counting the calls."""

    backend, where, max_batch = "torch", "capped session", 2

    def __init__(self):
        self.calls = []

    def _run(self, x):
        self.calls.append(len(x))
        return _zeros(len(x))


def test_crop_batches_honour_max_batch(engine):
    from smpler_deploy.pipeline.crops import infer_batched, session_max_batch

    s = Capped()
    assert session_max_batch(s, 8) == 2 and session_max_batch(s, 1) == 1
    outs = infer_batched(s, [images(3), images(0), images(2)], session_max_batch(s, 8))
    assert s.calls == [2, 2, 1] and [None if o is None else len(o.vertices) for o in outs] == [3, None, 2]
    with TensorRTSession(engine, api=RecordingCudaStandIn()) as trt:
        assert session_max_batch(trt, 8) == 4 and session_max_batch(trt, 3) == 3
    s.max_batch = None
    assert session_max_batch(s, 8) == 8


class Known(Session):
    """A real model's outputs under the facts a graph exported from a checkpoint with SMPL reports."""

    backend, where, precision = "onnxruntime", "known session", Precision("fp16")

    def __init__(self, inner, info: SessionInfo, max_batch=None):
        self.inner, self.info, self.max_batch = inner, info, max_batch

    def _run(self, x):
        return self.inner.infer(x)


@pytest.fixture
def known(monkeypatch, default_model):
    """smpler-demo / smpler-run open `Known` with the given facts instead of the graph named by --onnx."""
    import smpler_deploy.runtime as runtime
    from smpler_deploy.runtime.torch_session import TorchSession

    def use(info: SessionInfo, max_batch=None):
        monkeypatch.setattr(runtime, "open_session", lambda *a, **kw: Known(TorchSession(default_model), info,
                                                                              max_batch))

    return use


def _image(tmp_path):
    from PIL import Image
    from skimage import data

    p = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    return p


def test_demo_labels_from_the_typed_facts(tmp_path, known, capsys):
    """Facts a session knows decide the label; a fact it does not know (None) follows the flags."""
    from smpler_deploy.cli.demo import main

    img, graph = _image(tmp_path), tmp_path / "m.onnx"
    graph.write_bytes(b"opened by the stand-in")
    known(SessionInfo(untrained=False, standin_body=False))
    assert main([str(img), "--backend", "onnxruntime", "--onnx", str(graph), "--out", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "note:" not in out
    known(SessionInfo(untrained=False))  # body model unknown, no --smpl-model: the stand-in's faces drew it
    assert main([str(img), "--backend", "onnxruntime", "--onnx", str(graph), "--out", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "note: smpler-deploy: stand-in body model (not SMPL)" in out and "untrained" not in out


def test_run_reads_the_typed_facts_and_max_batch(tmp_path, known, capsys):
    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline.params import read_params

    img, graph = _image(tmp_path), tmp_path / "m.onnx"
    graph.write_bytes(b"opened by the stand-in")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"frame": 0, "bbox": [84, 20, 279, 492]}]))
    args = [str(img), "--backend", "onnxruntime", "--onnx", str(graph), "--boxes", str(boxes)]
    known(SessionInfo(untrained=False, standin_body=False), max_batch=1)
    # a graph exported with SMPL needs that body model to draw and re-pose: refused before any output
    assert main([*args, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --smpl-model") and "m.onnx was exported with a SMPL body model" in err
    assert "\n" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png", "boxes.json", "m.onnx"]
    assert main([*args, "-o", str(tmp_path / "b"), "--no-overlay"]) == 0
    out = capsys.readouterr().out
    assert "model: onnxruntime fp16, up to 1 crops per call" in out and "note:" not in out
    _, meta = read_params(tmp_path / "b" / "params.npz")
    assert meta["untrained"] is False and meta["standin_body"] is False and meta["precision"] == "fp16"


def test_library_names_the_file_and_the_commands_add_their_flag(tmp_path, capsys):
    """Sessions name what they were given (the file, the option); smpler-demo's message names its flag too."""
    from smpler_deploy.cli.common import flag_message
    from smpler_deploy.cli.demo import main
    from smpler_deploy.errors import OptionError
    from smpler_deploy.runtime import open_session
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    with pytest.raises(OptionError) as e:
        open_session("onnxruntime", path=None)
    assert e.value.field == "onnx" and not str(e.value).startswith("--")
    assert flag_message(e.value).startswith("--onnx: the onnxruntime backend needs an ONNX file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(SmplerError, match=rf"^{junk}: not a readable ONNX model"):
        OnnxRuntimeSession(junk)
    with pytest.raises(SmplerError, match=rf"^--onnx {junk}: not a readable ONNX model"):
        OnnxRuntimeSession(junk, where=f"--onnx {junk}")
    assert main([str(_image(tmp_path)), "--backend", "onnxruntime", "--onnx", str(junk),
                 "--out", str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --onnx {junk}: not a readable ONNX model")
