"""The output lock `.NAME.lock` is never opened through a planted file: a symbolic link, a hard link to another
file or a FIFO in its place is refused in one line, the file it points at is untouched, nothing is written."""

from __future__ import annotations

import os

import pytest

from smpler_deploy.errors import SmplerError


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim"
    v.mkdir()
    (v / "secret.txt").write_bytes(b"not yours\n" * 100)
    return v / "secret.txt"



@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_lock_file_never_written_through_a_planted_file(tmp_path, victim, plant):
    """A planted `.o.png.lock` link made a writer truncate a victim file and write its pid into it; now the lock is
    refused in one line, the victim is untouched and the output is not written."""
    from smpler_deploy import fileio
    from smpler_deploy.fileio.claims import lock_path

    out = tmp_path / "o.png"
    lock = lock_path(out)
    before = victim.read_bytes()
    {"symlink": lambda: lock.symlink_to(victim), "hardlink": lambda: os.link(victim, lock),
     "fifo": lambda: os.mkfifo(lock)}[plant]()
    with pytest.raises(SmplerError, match=rf"^`out` {out}: {lock} is .*, not a lock file; refused"):
        with fileio.outputs(out):
            fileio.write_bytes_atomic(out, b"png")
    assert victim.read_bytes() == before and not out.exists()


def test_demo_refuses_a_planted_lock_symlink(tmp_path, victim, capsys):
    """Through the command the issue names (smpler-demo writes its overlay through fileio.outputs)."""
    from PIL import Image

    from smpler_deploy.cli.demo import main

    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    (tmp_path / ".o.png.lock").symlink_to(victim)
    before = victim.read_bytes()
    assert main([str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert ".o.png.lock is a symbolic link, not a lock file; refused" in err
    assert victim.read_bytes() == before and not (tmp_path / "o.png").exists()
