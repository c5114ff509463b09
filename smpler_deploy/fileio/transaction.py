"""One command's outputs as one transaction (`outputs(...)`): every destination checked and claimed before any work;
every file committed inside the block (by `atomic.atomic_path`, in this thread) is removed again, or under `force`
the previous file put back, if the block fails, so multi-file outputs (ONNX + fidelity, engine + manifest +
layers, PNG + OBJ + PLY) are kept together or not at all. Plus the one-line messages about what stayed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import SmplerError, opt
from .checks import check_output_dir, check_output_path
from .claims import claimed, destination_key

_local = threading.local()  # .txs: this thread's open transactions (innermost last)


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
                remove_output(backup)


def open_transactions() -> list[Transaction]:
    if not hasattr(_local, "txs"):
        _local.txs = []
    return _local.txs


def _names(paths) -> str:
    return ", ".join(str(p) for p in paths)


@contextlib.contextmanager
def outputs(*paths, force: bool = False, flag: str = opt("out"), dirs=()) -> Iterator[Transaction]:
    """Check and claim every output file (and output directory in `dirs`) before any work; run the block as one
    transaction: on any exception (Ctrl-C included) what it wrote is removed and the previous files restored.
    Items are paths or (path, flag) pairs; the flag names the destination in errors (default `flag`: a command
    passes its flag, the library's default is the option's name, `out`, which a command shows as its flag).

    The exception leaving the block carries `.kept` (files this block wrote that stay on disk) and `.removed`.
    """
    def flagged(items):  # each item is a path or (path, the flag to name in errors)
        return [(Path(i[0]), i[1]) if isinstance(i, tuple) else (Path(i), flag) for i in items if i is not None]

    out_dirs = [check_output_dir(d, f) for d, f in flagged(dirs)]
    made = {destination_key(d) for d in out_dirs if not d.exists()}  # files inside these are checked once they exist
    files = {destination_key(p): (p, f) for p, f in flagged(paths)}
    for p, f in files.values():
        if destination_key(p.parent) not in made:
            check_output_path(p, force, f)
    tx = Transaction()
    txs = open_transactions()
    txs.append(tx)
    try:
        with contextlib.ExitStack() as stack:
            for d in out_dirs:
                make_output_dir(d)
            for key in sorted(files):
                p, f = files[key]
                stack.enter_context(claimed(p, force=force, label=f"{f} {p}"))
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
    if open_transactions():
        open_transactions()[-1].dirs.append(p)
    return p


def remove_output(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

