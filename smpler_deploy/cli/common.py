"""What every command-line entry point shares: one-line errors, no tracebacks, non-zero exits."""

from __future__ import annotations

import argparse
import functools
import sys

from ..errors import SmplerError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the smpler-* error style: one `error: ...` line naming the program, exit 2 (no usage dump)."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def check_positive(flag: str, value) -> None:
    """The one check of a count flag (--threads, --batch, ...): None (not given) or 1 and more."""
    if value is not None and value < 1:
        raise SmplerError(f"{flag} {value}: expected a positive integer")


def cli_main(fn):
    """Wrap `main(argv) -> int`: SmplerError -> `error: ...` on stderr and exit 2; an OSError (full disk,
    read-only file system, a file where a folder is expected) -> one line naming the path, exit 1; Ctrl-C -> exit
    130 with a line saying what was kept (outputs written through fileio.outputs are removed when interrupted).
    Any other exception is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(argv=None):
        try:
            return fn(argv) or 0
        except SmplerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            from ..fileio import os_error_message

            print(f"error: {os_error_message(e)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            from ..fileio import interrupted_message

            print(f"error: {interrupted_message(e)}", file=sys.stderr)
            return 130

    return wrapper
