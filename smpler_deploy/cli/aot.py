"""`smpler-aot`: compile the attention kernels to cubin/PTX for chosen GPUs (no GPU needed)."""

from __future__ import annotations

import os
import sys
import time

from .common import ArgumentParser, cli_main


def _aot():
    if "triton" not in sys.modules:
        # Triton fixes interpreter vs compiler when first imported (see plugins/kernels.py); AOT needs the
        # compiler. If triton is already loaded in interpreter mode, aot.build moves to a child process.
        os.environ["TRITON_INTERPRET"] = "0"
    from ..plugins import aot

    return aot


def build_parser() -> ArgumentParser:
    aot = _aot()
    from ..plugins.kernel_store import ENV

    p = ArgumentParser(prog="smpler-aot", description=__doc__)
    p.add_argument("--sm", action="append", metavar="N",
                   help=f"target compute capability, repeatable or comma-separated "
                        f"({', '.join(map(str, aot.SUPPORTED_SMS))}; default: all)")
    p.add_argument("--kernel", action="append", choices=aot.KERNEL_NAMES, help="default: both")
    p.add_argument("--dtype", action="append", choices=aot.DTYPES, help="default: both")
    p.add_argument("-o", "--output", metavar="DIR", help=f"output directory (default: ${ENV}, else "
                   f"~/.cache/smpler_deploy/kernels-triton<pin>: where the plugins look unless given --kernel-dir)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _ignore_half_built_kernels(u) -> None:
    """Ctrl-C inside triton.compile leaves a CompiledKernel whose __init__ did not finish; its __del__ then raises
    AttributeError ('module') at exit, which Python would print as a traceback after our one-line message."""
    if not (isinstance(u.exc_value, AttributeError)
            and getattr(u.object, "__qualname__", "") == "CompiledKernel.__del__"):
        sys.__unraisablehook__(u)


@cli_main
def main(argv: list[str] | None = None) -> int:
    sys.unraisablehook = _ignore_half_built_kernels
    aot = _aot()
    from ..plugins.kernel_store import ENV, resolve_kernel_dir

    a = build_parser().parse_args(argv)
    sms = aot.parse_sms(a.sm)
    default = os.environ.get(ENV)  # $SMPLER_KERNEL_DIR: the default of -o here and of the others' --kernel-dir
    out = resolve_kernel_dir(a.output or default)  # the same rule the runtime uses, so the default is where it looks
    if a.output is None:  # the cache location: its parents are ours to make (a given -o's parent must exist)
        out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index = aot.build(out, sms, kernels=a.kernel or aot.KERNEL_NAMES, dtypes=a.dtype or aot.DTYPES,
                      progress=None if a.quiet else (lambda m: print(f"  {m}", flush=True)))
    print(f"wrote {out}/index.json ({len(index['kernels'])} variants, sm {', '.join(map(str, sms))}) "
          f"in {time.perf_counter() - t0:.1f}s")
    if out.resolve() != resolve_kernel_dir(default).resolve():
        print(f"note: the plugins look in {resolve_kernel_dir(default)} by default; pass --kernel-dir {out} to "
              f"smpler-export/-bench/-demo, or export {ENV}={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
