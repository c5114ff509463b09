"""Child process of `build_engine(isolate=True)`: one engine build into a staging directory, messages on stderr,
the manifest (or the one-line error) in a result file. The job is one JSON object: the paths, the kernel
directory and the `EngineOptions` (`to_json` in the parent, `from_json` here). Not a user command."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    from ..errors import SmplerError
    from .builder import build_engine
    from .options import EngineOptions

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        result = {"manifest": build_engine(job["onnx"], job["engine"], EngineOptions.from_json(job["options"]),
                                           kernel_dir=job["kernel_dir"], force=True, log=log)}
    except SmplerError as e:
        result = {"error": str(e)}
    from ..fileio import write_text_atomic

    write_text_atomic(job["result"], json.dumps(result))  # in the parent's private staging directory
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
