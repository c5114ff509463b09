"""The one output writer every command uses (ONNX, engines + manifests, reports, demo images and meshes, kernels).

- `check_output_path` / `check_output_dir`: the destination is checked before any work (parent exists and is a
  writable directory, the target is not a directory, an existing file needs --force).
- `outputs(...)`: claims the destinations for the whole command with an exclusive lock file `.NAME.lock` (flock,
  holding the pid), so two concurrent writers of one name cannot both succeed: the second gets
  "another process is writing NAME" before it starts. The kernel drops a killed run's lock; its left-over lock
  file, temp files and backups are reclaimed by the next writer. Everything written inside the block is one
  transaction: on an error or Ctrl-C every file it wrote is removed (or, under --force, the previous file put
  back), so multi-file outputs (ONNX + fidelity, engine + manifest + layers, PNG + OBJ + PLY) are kept together
  or not at all.
- `atomic_path` / `write_bytes_atomic` / `write_text_atomic`: each file is written to an exclusive temp file beside
  it and renamed into place only when complete; without --force the final name is taken with link(2), which
  refuses to replace a file that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import SmplerError

_local = threading.local()  # .txs: this thread's open transactions (innermost last)
_mutex = threading.Lock()
_claims: dict[str, "_Claim"] = {}  # destination key -> claim held by some thread of this process


# ---------------------------------------------------------------- checks (no side effects)


def check_output_path(path: str | os.PathLike, force: bool = False, flag: str = "-o") -> Path:
    """Validate an output file path before any work; one-line SmplerError naming `flag` and the path."""
    p = Path(path)
    if p.is_dir():
        raise SmplerError(f"{flag} {p}: is a directory; expected a file name")
    _check_writable_dir(p.parent, p, flag)
    if (p.exists() or p.is_symlink()) and not force:
        raise SmplerError(f"{flag} {p}: file exists (pass --force to overwrite)")
    return p


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Validate an output directory (it may not exist yet; its parent must) before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SmplerError(f"{flag} {p}: exists and is not a directory")
    _check_writable_dir(p if p.exists() else p.parent, p, flag)
    return p


def _check_writable_dir(d: Path, p: Path, flag: str) -> None:
    """The directory `p` will be written in exists, is a directory, and this process may create files there."""
    if not d.exists():
        raise SmplerError(f"{flag} {p}: directory {d} does not exist")
    if not d.is_dir():
        raise SmplerError(f"{flag} {p}: {d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise SmplerError(f"{flag} {p}: directory {d} is not writable")


# ---------------------------------------------------------------- claims (exclusive, per destination)


def _key(p: Path) -> str:
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
    scratch = re.compile(rf"^\.{re.escape(p.name)}\.(\d+)\.[^/]+\.(?:tmp|bak|stage)$")  # see _scratch, stage_dir
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
def _claimed(p: Path, *, force: bool, label: str) -> Iterator[_Claim]:
    """Hold the exclusive claim on `p` (re-entrant within one thread; another thread counts as another writer)."""
    key, me = _key(p), threading.get_ident()
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


# ---------------------------------------------------------------- transactions


@dataclass
class Transaction:
    """Files committed inside one `outputs(...)` block, undone together if the block fails."""

    written: list[tuple[Path, Path | None]] = field(default_factory=list)  # (final, backup of the old file)
    dirs: list[Path] = field(default_factory=list)  # directories this block created

    def has(self, final: Path) -> bool:
        return any(f == final for f, _ in self.written)

    def rollback(self) -> list[Path]:
        """Undo every commit; return what could not be undone (still on disk)."""
        kept = []
        for final, backup in reversed(self.written):
            try:
                if final.is_dir() and not final.is_symlink():  # a directory committed by staged_dir
                    shutil.rmtree(final)
                    if backup is not None:
                        os.rename(backup, final)
                elif backup is not None:
                    os.replace(backup, final)
                else:
                    final.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                kept.append(final)
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: never remove what someone else put there
        self.written, self.dirs = [], []
        return kept

    def finish(self) -> None:
        for _, backup in self.written:
            if backup is not None:
                _remove(backup)


def _txs() -> list[Transaction]:
    if not hasattr(_local, "txs"):
        _local.txs = []
    return _local.txs


def _names(paths) -> str:
    return ", ".join(str(p) for p in paths)


@contextlib.contextmanager
def outputs(*paths, force: bool = False, flag: str = "-o", dirs=()) -> Iterator[Transaction]:
    """Check and claim every output file (and output directory in `dirs`) before any work; run the block as one
    transaction: on any exception (Ctrl-C included) what it wrote is removed and the previous files restored.
    Items are paths or (path, flag) pairs; the flag names the destination in errors (default `flag`).

    The exception leaving the block carries `.kept` (files this block wrote that stay on disk) and `.removed`.
    """
    def flagged(items):  # each item is a path or (path, the flag to name in errors)
        return [(Path(i[0]), i[1]) if isinstance(i, tuple) else (Path(i), flag) for i in items if i is not None]

    out_dirs = [check_output_dir(d, f) for d, f in flagged(dirs)]
    made = {_key(d) for d in out_dirs if not d.exists()}  # files inside these are checked once they exist
    files = {_key(p): (p, f) for p, f in flagged(paths)}
    for p, f in files.values():
        if _key(p.parent) not in made:
            check_output_path(p, force, f)
    tx = Transaction()
    txs = _txs()
    txs.append(tx)
    try:
        with contextlib.ExitStack() as stack:
            for d in out_dirs:
                make_output_dir(d)
            for key in sorted(files):
                p, f = files[key]
                stack.enter_context(_claimed(p, force=force, label=f"{f} {p}"))
            yield tx
    except BaseException as e:
        txs.pop()
        removed = [f for f, _ in tx.written]
        kept = tx.rollback()
        e.kept = [*getattr(e, "kept", []), *kept]
        e.removed = [*getattr(e, "removed", []), *(r for r in removed if r not in kept)]
        raise
    txs.pop()
    if txs:  # nested: the enclosing transaction owns these commits now
        txs[-1].written.extend(w for w in tx.written if not txs[-1].has(w[0]))
        txs[-1].dirs.extend(tx.dirs)
    else:
        tx.finish()


def os_error_message(e: OSError) -> str:
    """An OSError (full disk, read-only file system, ...) as one line naming the path the user gave: a scratch or
    staging name of this process is shown as the output it stands for."""
    names = [_final_name(f) for f in (e.filename, e.filename2) if f is not None]
    what = e.strerror or str(e) or e.__class__.__name__
    kept = getattr(e, "kept", [])
    tail = f"; {_names(kept)} could not be removed" if kept else ""
    return f"{' -> '.join(names)}: {what}{tail}" if names else f"{what}{tail}"


def _final_name(name) -> str:
    scratch = re.compile(rf"^\.(.+?)\.{os.getpid()}\.[^/]*\.(?:tmp|bak|stage)$")
    parts = [m.group(1) if (m := scratch.match(part)) else part for part in Path(os.fsdecode(name)).parts]
    return str(Path(*parts)) if parts else os.fsdecode(name)


def interrupted_message(exc: BaseException) -> str:
    """What an interrupted command says about its outputs."""
    kept = getattr(exc, "kept", [])
    removed = getattr(exc, "removed", [])
    if kept:
        return f"interrupted after writing {_names(kept)}; the rest was not written"
    if removed:
        return f"interrupted: nothing written ({_names(removed)} removed)"
    return "interrupted: nothing written"


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create an output directory (its parent must exist); removed again if the enclosing transaction fails."""
    p = Path(path)
    try:
        p.mkdir()
    except FileExistsError:
        if not p.is_dir():
            raise SmplerError(f"{p}: exists and is not a directory") from None
        return p
    except OSError as e:
        raise SmplerError(f"{p}: cannot create directory ({e.strerror})") from None
    if _txs():
        _txs()[-1].dirs.append(p)
    return p


# ---------------------------------------------------------------- atomic files


def _scratch(final: Path, suffix: str, kind: str) -> Path:
    """An exclusively created (O_EXCL) scratch file beside `final`, named with our pid for stale reclaim."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=f"{suffix}.{kind}",
                               dir=final.parent)
    os.close(fd)
    return Path(tmp)


def stage_dir(final: Path) -> Path:
    """A private staging directory beside `final`, named with our pid so `_reclaim_stale` removes it if we die."""
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".stage", dir=final.parent))


class _StageTx(Transaction):
    """What is written inside a `staged_dir` block: it moves (or is removed) with the staging directory."""


def check_output_tree(path: str | os.PathLike, force: bool = False, flag: str = "-o", owns=None) -> Path:
    """`check_output_dir` for a directory written as a whole (`staged_dir`): a non-empty one needs --force, and
    (given `owns(name)`, which names this command writes) holds nothing else, so --force never deletes a folder
    of other files (`-o .`, a folder holding the input)."""
    p = check_output_dir(path, flag)
    if not _nonempty(p):
        return p
    if not force:
        raise SmplerError(f"{flag} {p}: exists and is not empty (pass --force to replace it)")
    if owns is not None and p.is_dir():
        foreign = sorted(n for n in os.listdir(p) if not owns(n))
        if foreign:
            raise SmplerError(f"{flag} {p}: holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, "
                              "which this command does not write; only a previous output of it is replaced "
                              "(choose a new or empty folder)")
    return p


def _nonempty(p: Path) -> bool:
    """`p` holds something a new output would replace: a non-empty directory, a file, or a link."""
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        return True
    try:
        with os.scandir(p) as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, *, force: bool = False, flag: str = "-o", owns=None) -> Iterator[Path]:
    """A directory output as one transaction: checked and claimed before any work, written into a private staging
    directory beside it (yielded), renamed into place only when the block succeeds. A non-empty `path` needs
    --force and is then replaced as a whole (the previous one kept aside until the new one is in; inside an
    `outputs` block it is put back if that block fails). On an error or Ctrl-C nothing of the block stays."""
    out = check_output_tree(path, force, flag, owns)
    with _claimed(out, force=force, label=f"{flag} {out}"):  # a concurrent writer of `path` fails here
        stage = stage_dir(out)
        try:
            os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are ordinary shared directories
            txs = _txs()
            txs.append(_StageTx())  # files written in the stage move with it; nothing to undo one by one
            try:
                yield stage
            finally:
                txs.pop()
            _commit_dir(stage, out, force)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _commit_dir(stage: Path, out: Path, force: bool) -> None:
    """Rename a finished staging directory onto `out` (missing or empty; under --force the previous one is moved
    aside first, and removed once the new one is in, or by the enclosing transaction's end)."""
    backup = None
    if force and _nonempty(out):
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".bak", dir=out.parent))
        if out.is_symlink() or not out.is_dir():
            backup.rmdir()  # a link or file is renamed onto the free name (rename(2) puts directories on directories)
        os.rename(out, backup)
    try:
        os.rename(stage, out)  # replaces an empty directory, never a non-empty one
    except OSError as e:
        if backup is not None:
            os.rename(backup, out)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise SmplerError(f"{out}: another run's output of that name appeared while this one was written; "
                              "pass --force to replace it") from None
        raise
    outer = next((t for t in reversed(_txs()) if not isinstance(t, _StageTx)), None)
    if outer is not None:
        outer.written.append((out, backup))
    elif backup is not None:
        _remove(backup)


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    txs = _txs()
    tx = txs[-1] if txs else None
    backup = None
    if tx is not None and overwrite and final.exists() and not any(t.has(final) for t in txs):
        backup = _scratch(final, "", "bak")  # the previous file, put back if the transaction fails
        if not _try_link(final, backup, replace=True):
            os.replace(final, backup)
    if overwrite:
        os.replace(tmp, final)
    else:
        if not _try_link(tmp, final, replace=False):
            if final.exists():
                raise SmplerError(f"{final}: a file of that name appeared while it was being written; "
                                  "pass --force to overwrite")
            os.replace(tmp, final)
        tmp.unlink(missing_ok=True)
    if tx is not None:
        tx.written.append((final, backup))


def _try_link(src: Path, dst: Path, *, replace: bool) -> bool:
    """link(2) src -> dst; False where the file system has no hard links or (without `replace`) dst exists."""
    try:
        if replace:
            dst.unlink(missing_ok=True)
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            return False
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; it becomes `path` only if the block succeeds (else it is removed).

    Claims `path` for the block unless this thread already holds it (through `outputs`, whose --force decides
    whether an existing file may be replaced; outside `outputs`, library calls replace it).
    """
    final = Path(path)
    with _claimed(final, force=True, label=str(final)) as claim:
        tmp = _scratch(final, suffix, "tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary shared files
        try:
            yield tmp
            _commit(tmp, final, overwrite=claim.force)
        except OSError as e:  # a full disk raises from write() without a file name: name the output
            if e.filename is None:
                e.filename = str(final)
            raise
        finally:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_onnx(model, path: str | os.PathLike, external_data: bool | None = None) -> Path:
    """Write an ONNX model through this writer. Over protobuf's 2 GiB limit (or with `external_data=True`) the
    weights go to `NAME.data` beside it: both are staged in a private directory (so the graph's relative data
    reference is right from the start) and committed together, data first, or not at all."""
    import onnx

    final = Path(path)
    if external_data is None:
        try:
            external_data = model.ByteSize() >= 2**31 - 1
        except Exception:  # noqa: BLE001 - protobuf refuses to size messages past the limit
            external_data = True
    if not external_data:
        with atomic_path(final, suffix=".onnx") as tmp:
            onnx.save_model(model, str(tmp))
        return final
    data = final.with_name(final.name + ".data")
    stage = stage_dir(final)
    try:
        onnx.save_model(model, str(stage / final.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        with outputs(final, data, force=True):  # joins the caller's claims and transaction, if any
            with atomic_path(final, suffix=".onnx") as g_tmp:
                with atomic_path(data) as d_tmp:
                    os.replace(stage / data.name, d_tmp)
                os.replace(stage / final.name, g_tmp)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
