"""Exclusive claims on output names: a lock file `.NAME.lock` (flock, holding the pid) per destination, so two
concurrent writers of one name cannot both succeed; the second gets "another process is writing NAME" before it
starts. The kernel drops a killed run's lock; its left-over lock file, temp files and backups are reclaimed by the
next writer (`_reclaim_stale`). Within one process a claim is re-entrant for its thread and refused to others."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import SmplerError

_mutex = threading.Lock()
_claims: dict[str, "_Claim"] = {}  # destination key -> claim held by some thread of this process


def destination_key(p: Path) -> str:
    return os.path.join(os.path.realpath(p.parent), p.name)


def lock_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reclaim_stale(p: Path) -> list[Path]:
    """Remove temp files, backups and staging directories of `p` left by runs that were killed (pid gone)."""
    removed = []
    try:
        names = os.listdir(p.parent)
    except OSError:
        return removed
    # the names of atomic._scratch and staging.stage_dir: .NAME.PID.RANDOM[SUFFIX].KIND
    scratch = re.compile(rf"^\.{re.escape(p.name)}\.(\d+)\.[^/]+\.(?:tmp|bak|stage)$")
    for n in names:
        m = scratch.match(n)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            q = p.parent / n
            if q.is_dir() and not q.is_symlink():
                shutil.rmtree(q, ignore_errors=True)
            else:
                q.unlink(missing_ok=True)
            removed.append(q)
    return removed


@dataclass
class _Claim:
    path: Path
    fd: int
    force: bool
    thread: int
    depth: int = 1


def _busy(p: Path, label: str, pid=None) -> SmplerError:
    who = f" (pid {pid})" if pid else ""
    return SmplerError(f"{label}: another process{who} is writing {p.name}; wait for it or choose another name")


def _lock(p: Path, label: str) -> int:
    lp = lock_path(p)
    while True:
        # Never through a link: a planted `.NAME.lock` symlink (or hard link, FIFO, device) must not make us
        # truncate and write someone else's file. O_NONBLOCK: opening a planted FIFO does not wait.
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SmplerError(f"{label}: {lp} is a symbolic link, not a lock file; refused (remove it "
                                  "if it is not yours)") from None
            raise SmplerError(f"{label}: cannot create {lp.name} ({e.strerror})") from None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:  # its holder just released (unlinked) it: open anew
            os.close(fd)
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            kind = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a regular file"
            raise SmplerError(f"{label}: {lp} is {kind}, not a lock file; refused (remove it if it is not yours)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise _busy(p, label, pid if pid.isdigit() else None) from None
        # The previous holder unlinks the lock file on release: if it did so between our open and our flock,
        # we hold a lock on a dead inode; start over on the current file.
        try:
            cur = os.lstat(lp)
            if (st.st_ino, st.st_dev) == (cur.st_ino, cur.st_dev):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the "another process (pid N)" message
    except OSError as e:  # a full disk: release the lock (its file too) and name the output
        _unlock(p, fd)
        e.filename = str(p)
        raise
    _reclaim_stale(p)
    return fd


def _unlock(p: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(p))
    os.close(fd)


@contextlib.contextmanager
def claimed(p: Path, *, force: bool, label: str) -> Iterator[_Claim]:
    """Hold the exclusive claim on `p` (re-entrant within one thread; another thread counts as another writer)."""
    key, me = destination_key(p), threading.get_ident()
    with _mutex:
        c = _claims.get(key)
        if c is not None:
            if c.thread != me:
                raise _busy(p, label, os.getpid())
            c.depth += 1
        else:
            c = _Claim(p, _lock(p, label), force, me)
            _claims[key] = c
    try:
        yield c
    finally:
        with _mutex:
            c.depth -= 1
            if c.depth == 0:
                _claims.pop(key, None)
                _unlock(p, c.fd)

