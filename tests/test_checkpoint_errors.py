"""Checkpoints are untrusted: a pickle that would run code is refused at load, the error names the refused global
and never passes on torch's advice to retry with weights_only=False; nothing the pickle asks for runs."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from smpler_deploy.body.loaders import load_body_model
from smpler_deploy.errors import SmplerError
from smpler_deploy.model.checkpoint import read_checkpoint

MARKER = "C2B_EVIL_MARKER"


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class Plain:  # not a global a weights-only load allows either
    pass


@pytest.fixture
def evil(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the marker would land here
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    yield path
    assert not (tmp_path / MARKER).exists()  # the pickle's code never ran


def refusal(fn, path) -> str:
    with pytest.raises(SmplerError) as e:
        fn(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "weights_only" not in msg and "False" not in msg and "trust" not in msg  # no advice to unlock it
    return msg


def test_refused_global_named(evil):
    sys_global = f"GLOBAL {os.system.__module__}.system"  # posix.system on Linux
    for fn in (read_checkpoint, load_body_model):  # --checkpoint and --smpl-model CKPT
        assert sys_global in refusal(fn, evil)


def test_class_global_and_raw_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": Plain()}, tmp_path / "plain.pt")
    assert f"GLOBAL {__name__}.Plain" in refusal(read_checkpoint, tmp_path / "plain.pt")
    with open(tmp_path / "raw.pkl", "wb") as f:  # a plain pickle (not torch.save's zip), same payload
        pickle.dump({"a": Evil()}, f)
    refusal(read_checkpoint, tmp_path / "raw.pkl")
    assert not (tmp_path / MARKER).exists()


def test_demo_refuses_in_one_line(evil, tmp_path, capsys):
    from smpler_deploy.cli.demo import main

    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    out = tmp_path / "o.png"
    assert main([str(img), "--checkpoint", str(evil), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --checkpoint {evil}: ") and "GLOBAL" in err and "\n" not in err
    assert "weights_only" not in err and not out.exists()
