"""Child process of `build_engine(isolate=True)`: one engine build into a staging directory, messages on stderr,
the manifest (or the one-line error) in a result file. Not a user command."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    from ..errors import SmplerError
    from .builder import build_engine

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    opts = {k: v for k, v in job.items() if k not in ("onnx", "engine", "result")}
    try:
        result = {"manifest": build_engine(job["onnx"], job["engine"], force=True, log=log, **opts)}
    except SmplerError as e:
        result = {"error": str(e)}
    from ..fileio import write_text_atomic

    write_text_atomic(job["result"], json.dumps(result))  # in the parent's private staging directory
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
