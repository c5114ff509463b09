"""What every command-line entry point shares: one-line errors, no tracebacks, non-zero exits."""

from __future__ import annotations

import argparse
import functools
import re
import sys

from ..errors import OptionError, SmplerError

# The library names an option by its field or keyword (OptionError's field; `errors.opt(name)` in a message's text);
# the commands show the flag. Every flag of the smpler-* commands, by that name (argparse's dest), then the
# options whose library name differs from the flag's.
_FLAGS = ("--backend", "--backends", "--batch", "--bbox", "--boxes", "--budget-s", "--builder-optimization-level",
          "--cache-dir", "--calib", "--checkpoint", "--compile", "--conf", "--cuda-graphs", "--dataset",
          "--detect-every", "--detector", "--device", "--dtype", "--engine", "--ensemble", "--focal-length",
          "--force", "--format", "--h36m-regressor", "--hardware-compatibility-level", "--images", "--instances",
          "--interpret", "--iou", "--iters", "--kernel", "--kernel-dir", "--max-error-mm", "--max-frames",
          "--mem-pool-size", "--name", "--no-fidelity", "--no-joints", "--no-overlay", "--no-plots",
          "--no-progress", "--no-track", "--official-repo", "--onnx", "--plugins", "--precision", "--precisions",
          "--provider", "--queue", "--realtime", "--save-crops", "--save-vertices", "--seed", "--sm", "--smooth",
          "--smpl-model", "--steps", "--target", "--tf32", "--threads", "--timing-cache", "--triton-device",
          "--trt", "--trt-cache", "--trt-fp16", "--variant", "--version-compatible", "--warmup", "--work-dir")
FIELD_FLAGS = {f[2:].replace("-", "_"): f for f in _FLAGS} | {
    "sms": "--sm", "flavour": "--trt", "onnx_device": "--triton-device", "out": "-o", "output": "-o",
    "kernels": "--kernel-dir", "no_plugins": "--no-plugins", "out_dir": "--out"}
_CITED = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag_message(e: SmplerError) -> str:
    """The message a user sees: an option error names the flag of its field, and every option the text cites
    (`errors.opt`) is shown as its flag."""
    msg = e.named(FIELD_FLAGS.get(e.field, e.field)) if isinstance(e, OptionError) else str(e)
    return _CITED.sub(lambda m: FIELD_FLAGS.get(m.group(1), m.group(0)), msg)


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
            print(f"error: {flag_message(e)}", file=sys.stderr)
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


def add_kernel_dir_argument(parser) -> None:
    """`--kernel-dir DIR`, the same flag in smpler-export, smpler-bench, smpler-demo and smpler-check-gpu."""
    from ..plugins.kernel_store import ENV

    parser.add_argument("--kernel-dir", metavar="DIR", help=f"AOT attention kernels for --plugins engines "
                        f"(what `smpler-aot -o DIR` wrote; default ${ENV}, else the smpler-aot cache directory)")


def kernel_dir_arg(a):
    """The kernel directory a command hands on explicitly: --kernel-dir (which must hold an index.json), else
    $SMPLER_KERNEL_DIR (the commands' default, the only place it is read), else None (the smpler-aot cache)."""
    import os
    from pathlib import Path

    from ..plugins.kernel_store import ENV, aot_command

    if getattr(a, "kernel_dir", None):
        kdir = Path(a.kernel_dir).expanduser()
        if not (kdir / "index.json").is_file():
            raise SmplerError(f"--kernel-dir {kdir}: no index.json there; build the kernels with "
                              f"`{aot_command(outdir=kdir)}`")
        return kdir.resolve()
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else None
