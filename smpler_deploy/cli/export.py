"""smpler-export: SMPLer to ONNX (fp32 | fp16 | int8) and to TensorRT / TensorRT-RTX engines."""

from __future__ import annotations

import argparse
import sys
import time

from .. import __version__
from .common import ArgumentParser, add_kernel_dir_argument, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="smpler-export", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--variant", choices=["smpler", "smpler-l"], help="default smpler")
    p.add_argument("--checkpoint", help="official SMPLer .pt (default: the untrained out-of-the-box model)")
    p.add_argument("--smpl-model", help="SMPL .pkl/.npz (default: the checkpoint's arrays, else the stand-in)")
    p.add_argument("--h36m-regressor", help="J_regressor_h36m_correct.npy when the body model has none")
    p.add_argument("--format", default="onnx", choices=["onnx", "engine", "triton"],
                   help="onnx, engine, or triton: a Triton Inference Server model repository directory")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="default fp32; with --onnx, the graph's own (a different value is refused)")
    p.add_argument("--target", choices=["trt", "cpu"],
                   help="int8 layout: trt (default; symmetric Q/DQ TensorRT accepts) or cpu (ONNX Runtime's fused int8)")
    p.add_argument("--calib", help="directory of person-crop images for int8 calibration (a few hundred)")
    p.add_argument("--plugins", action=argparse.BooleanOptionalAction, default=False,
                   help="attention as TensorRT plugin nodes (needs the Python plugins at run time)")
    p.add_argument("--batch", default="1:1:8", help="MIN:OPT:MAX batch profile (default 1:1:8)")
    p.add_argument("--onnx", help="with --format engine or triton: use this ONNX file instead of exporting")
    p.add_argument("--trt", choices=["tensorrt", "tensorrt-rtx"], help="TensorRT flavour (default: installed)")
    p.add_argument("--sm", action="append",
                   help="TensorRT-RTX target compute capability (89, 8.9 or sm_89), repeatable (default 89)")
    p.add_argument("--timing-cache", help="timing cache file to read and update")
    p.add_argument("--builder-optimization-level", type=int)
    p.add_argument("--mem-pool-size", help="e.g. workspace:2G")
    p.add_argument("--version-compatible", action="store_true")
    p.add_argument("--hardware-compatibility-level", help="none | ampere_plus (ampere+) | same_compute_capability")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="fp32 layers may use TF32 tensor cores (default, as trtexec; --no-tf32 = trtexec --noTF32)")
    add_kernel_dir_argument(p)  # --trt tensorrt builds run the plugins' kernels while timing
    p.add_argument("--no-fidelity", action="store_true", help="skip the ONNX Runtime fidelity check")
    p.add_argument("--max-error-mm", metavar="MEAN,MAX",
                   help="fail the export (keeping nothing) when the vertex error vs PyTorch fp32 exceeds these mm "
                        "(default for int8: 15,75; none for fp32/fp16; 'none' disables)")
    p.add_argument("--force", action="store_true", help="overwrite existing output")
    _add_triton_flags(p)
    p.add_argument("-o", "--output", required=True, help="output file (.onnx or .engine; a directory for triton)")
    return p


def _add_triton_flags(p) -> None:
    from ..serve.repository import INFER_MODELS

    p.add_argument("--engine", help="with --format triton: a built engine (its .json manifest beside it) for the "
                                    "tensorrt_plan model; build it with --no-plugins for the GPU Triton runs on")
    p.add_argument("--instances", type=int, help="with --format triton: instances of each inference model (default 1)")
    p.add_argument("--ensemble", choices=list(INFER_MODELS),
                   help="with --format triton: the model the `smpler` ensemble runs (default tensorrt with --engine, "
                        "else onnxruntime; python: the project's session in Triton's Python backend)")
    p.add_argument("--triton-device", choices=["gpu", "cpu"], help="with --format triton: onnxruntime instances "
                                                                  "(default gpu)")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@cli_main
def main(argv=None) -> int:
    from ..fileio import outputs
    from .export_flags import export_spec

    a = build_parser().parse_args(argv)
    spec = export_spec(a)  # every flag checked (and the TensorRT flavour imported) before any work
    if spec.format == "triton":  # a model repository (smpler_deploy.serve), written all at once
        from ..serve.export_triton import export_triton

        return export_triton(spec, say, _load_model, onnx_where=spec.onnx and f"--onnx {spec.onnx}",
                             engine_where=spec.engine_file and f"--engine {spec.engine_file}")
    calib_images = None
    if spec.calib:  # read the images now: a bad directory fails before the model is built
        from ..export.int8 import load_calibration_dir

        calib_images = load_calibration_dir(spec.calib)
    t0 = time.perf_counter()
    # Every output is claimed now (a concurrent writer of the same names fails here, before any work) and kept
    # only if the whole command succeeds: on an error or Ctrl-C nothing it wrote stays.
    with outputs(*spec.output_files(), force=spec.force):
        if not spec.onnx_given:
            _export(spec, _load_model(spec), calib_images)
        if spec.format == "engine":
            _build(spec)
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _load_model(spec):
    from ..model.checkpoint import load_model

    say("loading model ...")
    model = load_model(spec.variant, spec.checkpoint, spec.smpl_model, h36m_regressor=spec.h36m_regressor)
    if model.info.get("untrained"):
        say("note: no --checkpoint: using the default UNTRAINED model (seeded weights, BatchNorm re-estimated on "
            "sample photos); numbers show deployment fidelity, not pose accuracy")
    if model.info.get("standin_body"):
        say("note: body model is the generated STAND-IN (SMPL's shapes, synthetic values); pass --smpl-model")
    return model


def _export(spec, model, calib_images) -> None:
    from ..export.onnx_export import export_onnx, measure_fidelity
    from ..spec import fidelity_path

    onnx_path, prec = spec.onnx, spec.precision
    res = export_onnx(onnx_path, precision=prec, model=model, calib=spec.calib, calib_images=calib_images, plugins=spec.plugins, batch=spec.batch, log=say)
    rep = res["report"]
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB, {rep['nodes']} nodes, "
          f"{prec.kind}{' ' + prec.target if prec.target else ''}, {res['seconds']:.1f} s)")
    if prec.kind == "int8":
        print(f"  quantized nodes: {len(res['quantized_nodes'])} (backbone convolutions; recorded in the "
              f"graph metadata 'quantized_nodes'); calibration: {res['calibration_set']}")
    if spec.plugins:
        print("  fidelity: skipped (plugin nodes run only in TensorRT; export without --plugins to check in ORT)")
    elif spec.fidelity:
        from ..errors import SmplerError
        from ..fidelity import check_gate, format_fidelity_table, write_fidelity_json

        say("measuring fidelity in ONNX Runtime against PyTorch fp32 ...")
        fid = measure_fidelity(model, onnx_path)
        print(format_fidelity_table(fid, f"fidelity of {onnx_path.name} vs PyTorch fp32 (mm / deg)"))
        over = check_gate(fid, spec.max_error_mm)
        if over:  # raised inside the output transaction: nothing this command wrote is kept
            raise SmplerError(f"{onnx_path}: fidelity gate (--max-error-mm) failed: {over}; nothing written")
        fpath = write_fidelity_json(fid, fidelity_path(onnx_path))
        print(f"  fidelity written to {fpath}")


def _build(spec) -> None:
    from ..engine.builder import build_engine
    from ..engine.layer_summary import format_layer_summary, precision_warning

    out = spec.output
    man = build_engine(spec.onnx, out, spec.engine, kernel_dir=spec.kernel_dir, force=spec.force,
                       isolate=True, log=say)  # a child process: Ctrl-C stops the build at once
    trt, tgt = man["trt"], man["target"]["sms"]
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {trt['flavour']} {trt['version']}, "
          f"target {'SM' + ', SM'.join(map(str, tgt)) if tgt else 'local GPU'}, "
          f"build {man['build']['seconds']:.1f} s) and {out.name}.json")
    print(format_layer_summary(man["layers"]))
    warning = precision_warning(man["layers"], man.get("precision"))
    if warning:
        print(warning)


if __name__ == "__main__":
    sys.exit(main())
