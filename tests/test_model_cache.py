"""The on-disk cache of the default model and the stand-in body model (smpler_deploy.cache).

Each test points SMPLER_DEPLOY_CACHE at a directory of its own: nothing here depends on what any cache held before.
The default model is built once for the module (that build is what the cache must reproduce bit for bit); the
rebuild paths (corrupt, stale, foreign, unwritable) are exercised on the stand-in body model, which goes through
the same cache and costs a second or two to make, not tens of seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from smpler_deploy.body.standin import make_standin_body_model
from smpler_deploy.model.checkpoint import default_state_arrays
from smpler_deploy.model.smpler import SMPLer

ENV = "SMPLER_DEPLOY_CACHE"
BODY = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces", "parents", "J_regressor_h36m")


def _lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


def _same_body(a, b) -> None:
    for k in BODY:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and np.array_equal(x, y), k


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache dir, the default state as built from scratch there, the skeleton model): one real build, stored."""
    d = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as m:
        m.setenv(ENV, str(d))
        model = SMPLer("smpler")
        fresh = default_state_arrays(model)  # empty cache: builds and stores
    assert (d / "default-smpler-seed0.npz").is_file()
    return d, fresh, model


def test_cache_hit_equals_fresh_build(built, monkeypatch, capsys):
    d, fresh, model = built
    monkeypatch.setenv(ENV, str(d))
    capsys.readouterr()
    hit = default_state_arrays(model)
    assert _lines(capsys.readouterr().err) == []
    assert hit.keys() == fresh.keys() == model.state_dict().keys()
    for k in fresh:
        assert hit[k].dtype == fresh[k].dtype and hit[k].shape == fresh[k].shape, k
        assert np.array_equal(hit[k], fresh[k]), k  # bit for bit (no NaN in the state)


def test_second_process_loads_the_cached_model(built, tmp_path):
    """What a user's second command does: load_model in a new process reads the entry instead of building."""
    d, fresh, _ = built
    out = tmp_path / "state.pt"
    before = (d / "default-smpler-seed0.npz").stat().st_mtime_ns
    code = ("import sys, torch; from smpler_deploy import load_model; "
            "torch.save(load_model('smpler').state_dict(), sys.argv[1])")
    r = subprocess.run([sys.executable, "-c", code, str(out)], env={**os.environ, ENV: str(d)},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _lines(r.stderr) == [], r.stderr  # no rebuild, no warning
    assert (d / "default-smpler-seed0.npz").stat().st_mtime_ns == before  # read, not rewritten
    sd = torch.load(out, weights_only=True)
    assert sd.keys() == fresh.keys()
    for k, t in sd.items():
        assert torch.equal(t, torch.from_numpy(fresh[k])), k


def test_body_cache_hit_equals_generation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "off")
    generated = make_standin_body_model(0)
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv(ENV, str(tmp_path))
    first = make_standin_body_model(0)  # miss: generated and stored
    assert (tmp_path / "standin-body-seed0.npz").is_file()
    hit = make_standin_body_model(0)
    assert _lines(capsys.readouterr().err) == []
    _same_body(generated, first)
    _same_body(generated, hit)
    assert hit.standin and hit.source == generated.source


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ENV, "off")
    make_standin_body_model(0)
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
    monkeypatch.delenv(ENV)  # the default location: XDG_CACHE_HOME
    make_standin_body_model(0)
    assert (tmp_path / "xdg" / "smpler_deploy" / "models" / "standin-body-seed0.npz").is_file()


@pytest.fixture
def body_entry(tmp_path, monkeypatch):
    """A cache holding a good stand-in entry: (its path, the body model it holds)."""
    monkeypatch.setenv(ENV, str(tmp_path))
    body = make_standin_body_model(0)
    return tmp_path / "standin-body-seed0.npz", body


def _rebuilt_once(path, reference, capsys, words):
    """The next load says so in one line naming the file, returns the right model and leaves a good entry."""
    capsys.readouterr()
    again = make_standin_body_model(0)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "rebuilding" in lines[0] and all(w in lines[0] for w in words), lines[0]
    _same_body(reference, again)
    make_standin_body_model(0)
    assert _lines(capsys.readouterr().err) == []  # the entry was replaced by a good one


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_corrupt_entry_is_rebuilt(body_entry, capsys, damage):
    path, body = body_entry
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:  # one byte inside the first array's data: the zip CRC catches it
        with zipfile.ZipFile(path) as z:
            info = next(i for i in z.infolist() if i.filename.startswith("blob_"))
        h = info.header_offset
        start = h + 30 + int.from_bytes(data[h + 26:h + 28], "little") + int.from_bytes(data[h + 28:h + 30], "little")
        raw = bytearray(data)
        raw[start + 1000] ^= 0xFF
        path.write_bytes(bytes(raw))
    _rebuilt_once(path, body, capsys, ["unreadable"])


def test_stale_entry_is_rebuilt(body_entry, capsys):
    """An entry made for other inputs (here: another seed's, under this seed's name) is not used."""
    path, body = body_entry
    seed1 = path.with_name("standin-body-seed1.npz")
    seed1.write_bytes(path.read_bytes())
    capsys.readouterr()
    other = make_standin_body_model(1)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "stale" in lines[0] and "seed: 0 -> 1" in lines[0], lines
    assert not np.array_equal(other.posedirs, body.posedirs)  # seed 1's correctives, not seed 0's
    assert other.source.endswith("seed 1)")


def _rewrite(path, members):
    np.savez(path, **members)


def test_foreign_entries_are_rebuilt(body_entry, capsys):
    path, body = body_entry
    with np.load(path) as f:
        members = {k: f[k] for k in f.files}
    # a file of that name that is no cache entry
    _rewrite(path, {"v_template": body.v_template})
    _rebuilt_once(path, body, capsys, ["not a cache entry"])
    # the right key, but arrays of other shapes (what another layout of the same name would hold)
    index = json.loads(bytes(members["__index__"]).decode())
    for row in index:
        if row[0] == "faces":
            row[2] = row[2][::-1]
    _rewrite(path, {**members, "__index__": np.frombuffer(json.dumps(index).encode(), np.uint8)})
    _rebuilt_once(path, body, capsys, ["faces", "expected"])
    # the default model's entry is foreign to the body model's name
    _rewrite(path, {**members, "__key__": np.frombuffer(json.dumps({"what": "default-model"}).encode(), np.uint8)})
    _rebuilt_once(path, body, capsys, ["stale"])


def test_unwritable_cache_dir_is_one_warning(tmp_path, monkeypatch, capsys):
    reference = make_standin_body_model(0)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(ENV, str(blocker / "cache"))  # cannot be created: its parent is a file
    capsys.readouterr()
    body = make_standin_body_model(0)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cannot cache" in lines[0] and "continuing without" in lines[0], lines
    _same_body(reference, body)


def test_full_cache_dir_is_one_warning_and_no_partial_file(tmp_path):
    """A disk that fills up mid-write (here: a file-size limit of 1 MiB for a 20 MB entry): the command goes on,
    says so once, and leaves neither the entry nor its temp file behind."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
            "from smpler_deploy.body.standin import make_standin_body_model; "
            "print(make_standin_body_model(0).v_template.shape)")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, ENV: str(tmp_path)}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(6890, 3)"
    lines = _lines(r.stderr)
    assert len(lines) == 1 and "cannot cache" in lines[0] and "File too large" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_cache_dir(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setenv(ENV, str(ro))
    ro.chmod(0o555)
    try:
        capsys.readouterr()
        body = make_standin_body_model(0)  # empty and read-only: built, one warning
        lines = _lines(capsys.readouterr().err)
        assert len(lines) == 1 and "cannot cache" in lines[0], lines
        ro.chmod(0o755)
        make_standin_body_model(0)  # stored now
        ro.chmod(0o555)
        capsys.readouterr()
        _same_body(body, make_standin_body_model(0))  # a read-only cache that holds the entry is just read
        assert _lines(capsys.readouterr().err) == []
    finally:
        ro.chmod(0o755)
