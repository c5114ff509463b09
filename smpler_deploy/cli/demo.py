"""smpler-demo: one image -> SMPLer mesh drawn over it (PNG) plus the mesh as OBJ and PLY.

  smpler-demo IMAGE [--bbox x,y,w,h] [--backend torch|onnxruntime|tensorrt] [--onnx PATH | --engine PATH] \
      [--device cpu|cuda --precision fp32|fp16|bf16] [--provider cpu|cuda|tensorrt] \
      --out overlay.png [--force]   # also writes overlay.obj and overlay.ply
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import SmplerError
from ..fileio import check_output_path, outputs
from .. import __version__
from .common import ArgumentParser, add_kernel_dir_argument, check_positive, cli_main, kernel_dir_arg


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="smpler-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("image", help="input image (PNG/JPEG)")
    ap.add_argument("--bbox", default=None, help="person box x,y,w,h in pixels (default: the whole image)")
    ap.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    ap.add_argument("--onnx", default=None, help="ONNX file (onnxruntime backend)")
    ap.add_argument("--engine", default=None, help="engine file (tensorrt backend)")
    ap.add_argument("--variant", default="smpler", help="smpler or smpler-l (torch backend)")
    ap.add_argument("--checkpoint", default=None, help="official checkpoint (torch backend; faces for others)")
    ap.add_argument("--smpl-model", default=None, help="SMPL model file (body model; mesh faces)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="torch backend: cpu (default), cuda or cuda:N")
    ap.add_argument("--precision", default=None, help="torch backend: fp32 (default), fp16 or bf16 (fp32 islands "
                    "as in the fp16 ONNX graph)")
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                    help="torch backend on CUDA: capture the forward per batch size and replay it (default on)")
    ap.add_argument("--compile", action="store_true", help="torch backend: torch.compile the model")
    ap.add_argument("--provider", default=None, help="onnxruntime backend: cpu (default), cuda or tensorrt "
                    "(cuda/tensorrt need onnxruntime-gpu)")
    ap.add_argument("--trt-cache", default=None, help="--provider tensorrt: engine/timing cache directory "
                    "(default ~/.cache/smpler_deploy/ort-trt)")
    ap.add_argument("--trt-fp16", action="store_true", help="--provider tensorrt: let TensorRT pick fp16 per layer")
    ap.add_argument("--no-joints", action="store_true", help="do not draw the 24 SMPL joints")
    add_kernel_dir_argument(ap)  # tensorrt backend, --plugins engines
    ap.add_argument("--out", required=True, help="overlay PNG path; .obj/.ply are written beside it")
    ap.add_argument("--force", action="store_true", help="overwrite existing --out PNG/OBJ/PLY")
    return ap


def parse_bbox(text: str | None):
    if text is None:
        return None
    try:
        vals = [float(t) for t in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise SmplerError(f"--bbox {text}: expected four numbers x,y,w,h")
    if not all(math.isfinite(v) for v in vals):
        raise SmplerError(f"--bbox {text}: expected finite numbers x,y,w,h (no NaN/Inf)")
    return tuple(vals)


def default_trt_cache() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smpler_deploy" / "ort-trt"


def session_options(a) -> dict:
    """open_session keyword arguments from the device/provider flags; a flag for another backend is an error."""
    torch_flags = {"--device": a.device, "--precision": a.precision, "--cuda-graphs": a.cuda_graphs,
                   "--compile": a.compile or None}
    ort_flags = {"--provider": a.provider, "--trt-cache": a.trt_cache, "--trt-fp16": a.trt_fp16 or None}
    for backend, flags in (("torch", torch_flags), ("onnxruntime", ort_flags)):
        given = [f for f, v in flags.items() if v is not None]
        if given and a.backend != backend:
            raise SmplerError(f"{given[0]}: applies to --backend {backend} (got --backend {a.backend})")
    if a.backend == "torch":
        from ..precision import Precision
        from ..runtime.torch_plan import plan_torch

        precision = Precision.parse(a.precision or "fp32", "--precision")  # parsed once, typed from here
        precision.require_torch("--precision")
        kw = {"device": a.device or "cpu", "precision": precision, "cuda_graphs": a.cuda_graphs,
              "compile": a.compile}
        plan_torch(**kw)  # --device cuda without CUDA: one line now, not after loading the model
        return kw | {"checkpoint": a.checkpoint, "smpl_model": a.smpl_model}
    if a.backend == "onnxruntime":
        import onnxruntime as ort

        from ..runtime.ort_providers import check_available, parse_provider

        provider = parse_provider(a.provider or "cpu")
        if a.trt_cache and provider != "tensorrt":
            raise SmplerError(f"--trt-cache: applies to --provider tensorrt (got --provider {provider})")
        if a.trt_fp16 and provider != "tensorrt":
            raise SmplerError(f"--trt-fp16: applies to --provider tensorrt (got --provider {provider})")
        check_available(provider, ort.get_available_providers())
        kw = {"provider": provider, "where": f"--onnx {a.onnx}"}
        if provider == "tensorrt":
            kw |= {"trt_cache": a.trt_cache or default_trt_cache(), "trt_fp16": a.trt_fp16, "batches": (1,)}
        return kw
    return {}


def _faces(sess, a):
    """Mesh faces: the torch model's own, else the body model the user names, else the generated stand-in."""
    if sess.smpl_layer is not None:
        return sess.smpl_layer.faces
    src = a.smpl_model or a.checkpoint
    if src:
        from ..body.loaders import load_body_model

        return load_body_model(src).faces
    from ..body.standin import make_standin_body_model

    return make_standin_body_model(0).faces


@cli_main
def main(argv=None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    kernel_dir = kernel_dir_arg(a)  # a given --kernel-dir is checked before any work
    from ..runtime import BACKENDS

    if a.backend not in BACKENDS:
        raise SmplerError(f"--backend {a.backend}: expected one of {', '.join(BACKENDS)}")
    out = Path(a.out)
    if out.suffix.lower() != ".png":
        raise SmplerError(f"--out {out}: expected a .png path")
    check_positive("--threads", a.threads)
    kw = session_options(a)  # flag combinations checked before any work
    if a.backend == "tensorrt":  # the plugins' kernels, handed to the session explicitly
        kw["kernel_dir"] = kernel_dir
    bbox = parse_bbox(a.bbox)
    meshes = (out.with_suffix(".obj"), out.with_suffix(".ply"))
    for p in (out, *meshes):  # before any work: a directory, missing parent or existing file fails here
        check_output_path(p, force=a.force, flag="--out")
    for flag, val in (("--onnx", a.onnx), ("--engine", a.engine), ("--checkpoint", a.checkpoint),
                      ("--smpl-model", a.smpl_model)):
        if val and not Path(val).is_file():
            raise SmplerError(f"{flag} {val}: file not found")
    with outputs(out, *meshes, force=a.force, flag="--out"):  # PNG, OBJ and PLY together or not at all
        return _run(a, out, meshes, bbox, kw)


def _run(a, out, meshes, bbox, kw: dict) -> int:
    from ..preprocess import crop_person, load_image
    from ..render import model_label, render_overlay, save_png, write_obj, write_ply
    from ..runtime import open_session

    image = load_image(a.image)
    x, transform = crop_person(image, bbox)  # raises on a box outside the image
    path = {"onnxruntime": a.onnx, "tensorrt": a.engine}.get(a.backend)
    with open_session(a.backend, path=path, variant=a.variant, threads=a.threads, **kw) as sess:
        o = sess.infer(x[None]).numpy()
        faces = _faces(sess, a)
        info = sess.info
    # facts the artifact does not record (an engine; a graph without our metadata) follow the flags
    standin = info.standin_body if info.standin_body is not None else not (a.smpl_model or a.checkpoint)
    untrained = info.untrained if info.untrained is not None else a.checkpoint is None
    label = model_label(untrained, standin)
    overlay = render_overlay(image, o.vertices[0], faces, o.cam[0], transform,
                             joints2d=None if a.no_joints else o.smpl_joints2d[0], label=label)
    note = f"smpler-demo {Path(a.image).name} ({a.backend})" + (f"; {label}" if label else "")
    written = [save_png(overlay, out), write_obj(meshes[0], o.vertices[0], faces, note),
               write_ply(meshes[1], o.vertices[0], faces, comment=note)]
    for p in written:
        print(f"wrote {p}")
    if label:
        print(f"note: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
