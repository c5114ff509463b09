"""smpler-export: SMPLer to ONNX (fp32 | fp16 | int8) and to TensorRT / TensorRT-RTX engines."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import SmplerError
from ..fileio import check_output_path
from .. import __version__
from .common import cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smpler-export", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--variant", default="smpler", choices=["smpler", "smpler-l"])
    p.add_argument("--checkpoint", help="official SMPLer .pt (default: the untrained out-of-the-box model)")
    p.add_argument("--smpl-model", help="SMPL .pkl/.npz (default: the checkpoint's arrays, else the stand-in)")
    p.add_argument("--h36m-regressor", help="J_regressor_h36m_correct.npy when the body model has none")
    p.add_argument("--format", default="onnx", choices=["onnx", "engine"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--target", default="trt", choices=["trt", "cpu"],
                   help="int8 layout: trt (symmetric Q/DQ TensorRT accepts) or cpu (ONNX Runtime's fused int8)")
    p.add_argument("--calib", help="directory of person-crop images for int8 calibration (a few hundred)")
    p.add_argument("--plugins", action=argparse.BooleanOptionalAction, default=False,
                   help="attention as TensorRT plugin nodes (needs the Python plugins at run time)")
    p.add_argument("--batch", default="1:1:8", help="MIN:OPT:MAX batch profile (default 1:1:8)")
    p.add_argument("--onnx", help="with --format engine: build from this ONNX file instead of exporting")
    p.add_argument("--trt", choices=["tensorrt", "tensorrt-rtx"], help="TensorRT flavour (default: installed)")
    p.add_argument("--sm", action="append", help="TensorRT-RTX target compute capability, repeatable (default 89)")
    p.add_argument("--timing-cache", help="timing cache file to read and update")
    p.add_argument("--builder-optimization-level", type=int)
    p.add_argument("--mem-pool-size", help="e.g. workspace:2G")
    p.add_argument("--version-compatible", action="store_true")
    p.add_argument("--hardware-compatibility-level", help="none | ampere_plus (ampere+) | same_compute_capability")
    p.add_argument("--no-fidelity", action="store_true", help="skip the ONNX Runtime fidelity check")
    p.add_argument("--force", action="store_true", help="overwrite existing output")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx or .engine)")
    return p


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@cli_main
def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from ..export.onnx_export import export_onnx, measure_fidelity, parse_batch

    out = check_output_path(a.output, a.force)
    batch = parse_batch(a.batch)
    if a.precision != "int8" and a.calib:
        raise SmplerError("--calib applies to --precision int8 only")
    calib_images = None
    if a.calib:  # read the images now: a bad directory fails before the model is built
        from ..export.int8 import load_calibration_dir

        calib_images = load_calibration_dir(a.calib)
    if a.format == "engine":
        from ..engine.trt_import import import_trt

        import_trt(a.trt)  # fail fast, before minutes of export, if no flavour is installed
    if a.onnx and a.format != "engine":
        raise SmplerError("--onnx applies to --format engine only")

    from ..model.smpler import load_model

    t0 = time.perf_counter()
    model = None
    if not (a.format == "engine" and a.onnx):
        say("loading model ...")
        model = load_model(a.variant, a.checkpoint, a.smpl_model, h36m_regressor=a.h36m_regressor)
        if model.info.get("untrained"):
            say("note: no --checkpoint: using the default UNTRAINED model (seeded weights, BatchNorm re-estimated on "
                "sample photos); numbers show deployment fidelity, not pose accuracy")
        if model.info.get("standin_body"):
            say("note: body model is the generated STAND-IN (SMPL's shapes, synthetic values); pass --smpl-model")

    onnx_path = Path(a.onnx) if a.onnx else (out if a.format == "onnx" else out.with_suffix(".onnx"))
    if a.format == "engine" and not a.onnx:
        check_output_path(onnx_path, a.force, flag="-o (ONNX beside the engine)")
    if not a.onnx:
        res = export_onnx(onnx_path, precision=a.precision, model=model, target=a.target, calib=a.calib,
                          calib_images=calib_images,
                          plugins=a.plugins, batch=batch, log=say)
        rep = res["report"]
        print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB, {rep['nodes']} nodes, "
              f"{a.precision}{' ' + a.target if a.precision == 'int8' else ''}, {res['seconds']:.1f} s)")
        if a.precision == "int8":
            print(f"  quantized nodes: {len(res['quantized_nodes'])} (backbone convolutions; recorded in the "
                  f"graph metadata 'quantized_nodes'); calibration: {res['calibration_set']}")
        if a.plugins:
            print("  fidelity: skipped (plugin nodes run only in TensorRT; export without --plugins to check in ORT)")
        elif not a.no_fidelity:
            from ..fidelity import format_fidelity_table, write_fidelity_json

            say("measuring fidelity in ONNX Runtime against PyTorch fp32 ...")
            fid = measure_fidelity(model, onnx_path)
            print(format_fidelity_table(fid, f"fidelity of {onnx_path.name} vs PyTorch fp32 (mm / deg)"))
            fpath = onnx_path.with_name(onnx_path.name + ".fidelity.json")
            write_fidelity_json(fid, fpath)
            print(f"  fidelity written to {fpath}")
    if a.format == "engine":
        from ..engine.builder import build_engine
        from ..engine.layer_summary import format_layer_summary, precision_warning

        sms = [int(s) for s in a.sm] if a.sm else None
        man = build_engine(onnx_path, out, flavour=a.trt, sms=sms, batch=batch, timing_cache=a.timing_cache,
                           builder_optimization_level=a.builder_optimization_level, mem_pool_size=a.mem_pool_size,
                           version_compatible=a.version_compatible,
                           hardware_compatibility_level=a.hardware_compatibility_level, force=a.force, log=say)
        trt, tgt = man["trt"], man["target"]["sms"]
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {trt['flavour']} {trt['version']}, "
              f"target {'SM' + ', SM'.join(map(str, tgt)) if tgt else 'local GPU'}, "
              f"build {man['build']['seconds']:.1f} s) and {out.name}.json")
        print(format_layer_summary(man["layers"]))
        warning = precision_warning(man["layers"], man.get("precision"))
        if warning:
            print(warning)
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
