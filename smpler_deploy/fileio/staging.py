"""Directory outputs written as a whole (`staged_dir`): into a private staging directory beside the destination,
renamed into place only when complete; a previous output is replaced only under `force` and only when it holds
nothing but what the command writes (`check_output_tree`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import SmplerError, opt
from .atomic import current_umask
from .checks import check_output_dir
from .claims import claimed
from .transaction import Transaction, open_transactions, remove_output


def stage_dir(final: Path) -> Path:
    """A private staging directory beside `final`, named with our pid (`claims._reclaim_stale` removes it if we
    die)."""
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".stage", dir=final.parent))


class _StageTx(Transaction):
    """What is written inside a `staged_dir` block: it moves (or is removed) with the staging directory."""


def check_output_tree(path: str | os.PathLike, force: bool = False, flag: str = opt("out"), owns=None) -> Path:
    """`check_output_dir` for a directory written as a whole (`staged_dir`): a non-empty one needs `force`, and
    (given `owns(name)`, which names this command writes) holds nothing else, so `force` never deletes a folder
    of other files (the current directory, a folder holding the input)."""
    p = check_output_dir(path, flag)
    if not _nonempty(p):
        return p
    if not force:
        raise SmplerError(f"{flag} {p}: exists and is not empty (pass {opt('force')} to replace it)")
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


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, *, force: bool = False, flag: str = opt("out"), owns=None) -> Iterator[Path]:
    """A directory output as one transaction: checked and claimed before any work, written into a private staging
    directory beside it (yielded), renamed into place only when the block succeeds. A non-empty `path` needs
    `force` and is then replaced as a whole (the previous one kept aside until the new one is in; inside an
    `outputs` block it is put back if that block fails). On an error or Ctrl-C nothing of the block stays."""
    out = check_output_tree(path, force, flag, owns)
    with claimed(out, force=force, label=f"{flag} {out}"):  # a concurrent writer of `path` fails here
        stage = stage_dir(out)
        try:
            os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp makes 0700; outputs are ordinary shared directories
            txs = open_transactions()
            txs.append(_StageTx())  # files written in the stage move with it; nothing to undo one by one
            try:
                yield stage
            finally:
                txs.pop()
            _commit_dir(stage, out, force)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _commit_dir(stage: Path, out: Path, force: bool) -> None:
    """Rename a finished staging directory onto `out` (missing or empty; under `force` the previous one is moved
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
                              f"pass {opt('force')} to replace it") from None
        raise
    outer = next((t for t in reversed(open_transactions()) if not isinstance(t, _StageTx)), None)
    if outer is not None:
        outer.written.append((out, backup))
    elif backup is not None:
        remove_output(backup)

