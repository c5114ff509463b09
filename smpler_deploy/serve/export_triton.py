"""`smpler-export --format triton -o REPO`: the graph exported (or the given `onnx` / `engine` taken) and the
repository written all at once (see `repository.py`). The flags were checked into an `ExportSpec` by the
command (cli/export_flags.py) before any work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .repository import write_repository


def export_triton(spec, say, load_model, onnx_where: str | None = None, engine_where: str | None = None) -> int:
    """Export (unless the spec holds an `onnx`/`engine`) and write the repository; `load_model(spec)` builds
    the model to export. onnx_where / engine_where: what errors about the given graph / engine name (the command
    passes its flags)."""
    out = spec.output
    # the graph is exported beside the output (named like fileio's scratch files, so a killed run's is reclaimed)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.{os.getpid()}.", suffix=".stage",
                                     dir=out.parent) as tmp:
        onnx = spec.onnx
        if spec.precision is not None:
            from ..export.onnx_export import export_onnx

            calib_images = None
            if spec.calib:
                from ..export.int8 import load_calibration_dir

                calib_images = load_calibration_dir(spec.calib)
            model = load_model(spec)
            onnx = Path(tmp) / "model.onnx"
            res = export_onnx(onnx, precision=spec.precision, model=model, calib=spec.calib,
                              calib_images=calib_images, batch=spec.batch, log=say)
            say(f"exported {spec.precision} graph in {res['seconds']:.1f} s (fidelity: run smpler-export -o NAME.onnx "
                "for the table)")
        cfgs = write_repository(out, onnx=onnx, engine=spec.engine_file, opts=spec.repo, force=spec.force, log=say,
                                onnx_where=onnx_where if onnx == spec.onnx else None, engine_where=engine_where)
    step = cfgs["smpler"]["ensemble_scheduling"]["step"][1]["model_name"]
    print(f"wrote {out}: {', '.join(cfgs)} (ensemble 'smpler' runs {step}; max_batch_size "
          f"{cfgs[step]['max_batch_size']})")
    return 0
