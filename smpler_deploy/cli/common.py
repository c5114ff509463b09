"""What every command-line entry point shares: one-line errors, no tracebacks, non-zero exits."""

from __future__ import annotations

import functools
import sys

from ..errors import SmplerError


def cli_main(fn):
    """Wrap `main(argv) -> int`: SmplerError -> `error: ...` on stderr and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(argv=None):
        try:
            return fn(argv) or 0
        except SmplerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted (no partial output was kept)", file=sys.stderr)
            return 130

    return wrapper
