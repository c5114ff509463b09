"""Atomic files: each file is written to an exclusive temp file beside it and renamed into place only when complete;
without `force` the final name is taken with link(2), which refuses to replace a file that appeared meanwhile.

`atomic_path` commits into the innermost `outputs` transaction open in this thread, without being handed it.
Why not explicitly: the writers that run inside a command's `outputs` block are library functions several calls
down (`render.write_ply`, `pipeline.params.write_params`, the engine builder's manifest and layer files); a
transaction argument would have to travel through every one of their signatures, and one call site that missed
it would silently drop its file out of the command's all-or-nothing guarantee. A writer that must stay out of a
command's transaction writes from a thread of its own (`cache._write`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import SmplerError, opt
from .claims import claimed
from .transaction import open_transactions


def _scratch(final: Path, suffix: str, kind: str) -> Path:
    """An exclusively created (O_EXCL) scratch file beside `final`, named with our pid for stale reclaim."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=f"{suffix}.{kind}",
                               dir=final.parent)
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    txs = open_transactions()
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
                                  f"pass {opt('force')} to overwrite")
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

    Claims `path` for the block unless this thread already holds it (through `outputs`, whose `force` decides
    whether an existing file may be replaced; outside `outputs`, library calls replace it). The commit joins the
    innermost `outputs` transaction open in this thread, if any (why implicitly: the module docstring).
    """
    final = Path(path)
    with claimed(final, force=True, label=str(final)) as claim:
        tmp = _scratch(final, suffix, "tmp")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are ordinary shared files
        try:
            yield tmp
            _commit(tmp, final, overwrite=claim.force)
        except OSError as e:  # a full disk raises from write() without a file name: name the output
            if e.filename is None:
                e.filename = str(final)
            raise
        finally:
            tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

