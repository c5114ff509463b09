"""Output destinations checked before any work (no side effects): parent exists and is a writable directory, the
target is not a directory, an existing file needs `force`. One-line SmplerError naming the destination (`flag`:
a command passes its flag; the library's default is the option's own name, `out`, which a command shows as its flag)
and the path."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SmplerError, opt


def check_output_path(path: str | os.PathLike, force: bool = False, flag: str = opt("out")) -> Path:
    """Validate an output file path before any work; one-line SmplerError naming `flag` and the path."""
    p = Path(path)
    if p.is_dir():
        raise SmplerError(f"{flag} {p}: is a directory; expected a file name")
    _check_writable_dir(p.parent, p, flag)
    if (p.exists() or p.is_symlink()) and not force:
        raise SmplerError(f"{flag} {p}: file exists (pass {opt('force')} to overwrite)")
    return p


def check_output_dir(path: str | os.PathLike, flag: str = opt("out")) -> Path:
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

