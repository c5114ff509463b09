"""`smpler-aot`: compile the attention kernels to cubin/PTX for chosen GPUs (no GPU needed)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .common import cli_main


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every smpler-* command
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


@cli_main
def main(argv: list[str] | None = None) -> int:
    if "triton" not in sys.modules:
        # Triton fixes interpreter vs compiler when first imported (see plugins/kernels.py); AOT needs the
        # compiler. If triton is already loaded in interpreter mode, aot.build moves to a child process.
        os.environ["TRITON_INTERPRET"] = "0"
    from ..plugins import aot

    p = _Parser(prog="smpler-aot", description=__doc__)
    p.add_argument("--sm", action="append", metavar="N",
                   help=f"target compute capability, repeatable or comma-separated "
                        f"({', '.join(map(str, aot.SUPPORTED_SMS))}; default: all)")
    p.add_argument("--kernel", action="append", choices=aot.KERNEL_NAMES, help="default: both")
    p.add_argument("--dtype", action="append", choices=aot.DTYPES, help="default: both")
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (default: $SMPLER_KERNEL_DIR or "
                   "~/.cache/smpler_deploy/kernels-triton<pin>, where the plugins look)")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    sms = aot.parse_sms(a.sm)
    out = a.output or aot.default_kernel_dir()
    t0 = time.perf_counter()
    index = aot.build(out, sms, kernels=a.kernel or aot.KERNEL_NAMES, dtypes=a.dtype or aot.DTYPES,
                      progress=None if a.quiet else (lambda m: print(f"  {m}", flush=True)))
    print(f"wrote {out}/index.json ({len(index['kernels'])} variants, sm {', '.join(map(str, sms))}) "
          f"in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
