"""smpler-run: people in an image, a folder of images, a video file or a camera -> SMPL meshes and parameters.

  smpler-run SOURCE -o OUT_DIR [--detector opencv|yolo.onnx|yolo.engine | --boxes boxes.json] \
      [--backend torch|onnxruntime|tensorrt] [--onnx PATH | --engine PATH] [--batch 8] [--smooth one-euro]

SOURCE: an image, a folder of images, a video file, or a camera (/dev/video0, 0, cam:0). OUT_DIR receives
params.npz and params.jsonl (SMPL parameters per frame and person) and the overlay: overlay.mp4 for video and
cameras, overlays/NAME.png for images. A per-stage throughput summary is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import SmplerError
from .common import ArgumentParser, check_positive, cli_main, kernel_dir_arg


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="smpler-run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("source", help="image, folder of images, video file, stream URL, or camera (/dev/video0, 0, "
                                   "cam:0)")
    ap.add_argument("--realtime", action="store_true",
                    help="treat a video file or stream as live: deliver it at its frame rate and drop frames the "
                         "model cannot keep up with (cameras always are)")
    ap.add_argument("-o", "--out", required=True, help="output folder (created if missing; its parent must exist); "
                                                       "written as a whole when the run ends")
    ap.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR (and --save-crops DIR)")
    g = ap.add_argument_group("people")
    g.add_argument("--detector", default="opencv",
                   help="'opencv' (built-in HOG + face cascade; weaker), or a YOLO person detector in ultralytics' "
                        "export layout: .onnx (ONNX Runtime) or .engine/.plan (TensorRT)")
    g.add_argument("--boxes", default=None, help="boxes file instead of a detector: JSON [{frame, bbox:[x,y,w,h], "
                                                 "track?}] or CSV frame,x,y,w,h[,track]; frame = 0-based index in "
                                                 "reading order (folders: sorted file names)")
    g.add_argument("--conf", type=float, default=0.25, help="YOLO person score threshold (default 0.25)")
    g.add_argument("--iou", type=float, default=0.45, help="YOLO NMS IoU threshold (default 0.45)")
    g.add_argument("--no-track", action="store_true", help="no track ids (norfair IoU tracker otherwise)")
    g.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="run the detector on every N-th frame only; the tracker carries the boxes in between "
                        "(default 1: every frame)")
    g.add_argument("--smooth", default="none", choices=("none", "ema", "one-euro"),
                   help="temporal smoothing of each track's parameters (default none)")
    m = ap.add_argument_group("model")
    m.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    m.add_argument("--onnx", default=None, help="SMPLer ONNX file (onnxruntime backend)")
    m.add_argument("--engine", default=None, help="SMPLer engine file (tensorrt backend)")
    m.add_argument("--provider", default="cpu", help="onnxruntime provider for SMPLer and a YOLO .onnx: cpu or cuda")
    m.add_argument("--variant", default="smpler", help="smpler or smpler-l (torch backend)")
    m.add_argument("--checkpoint", default=None, help="official checkpoint (torch backend)")
    m.add_argument("--smpl-model", default=None, help="SMPL model file (body model: mesh faces, smoothing)")
    m.add_argument("--threads", type=int, default=None, help="CPU threads per session")
    m.add_argument("--batch", type=int, default=8, help="most crops per session call (default 8; a TensorRT "
                                                        "engine's profile maximum caps it)")
    o = ap.add_argument_group("output")
    o.add_argument("--focal-length", type=float, default=None,
                   help="focal length in pixels for the camera translation (default: the image diagonal)")
    o.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    o.add_argument("--no-overlay", action="store_true", help="parameters only")
    o.add_argument("--no-joints", action="store_true", help="do not draw the 24 SMPL joints")
    o.add_argument("--save-vertices", action="store_true", help="also store vertices [N,6890,3] in params.npz")
    o.add_argument("--save-crops", default=None, metavar="DIR",
                   help="write each person's 224x224 crop as PNG (int8 calibration input: smpler-export --calib DIR); "
                        "a new or empty folder, or --force to replace it")
    o.add_argument("--queue", type=int, default=8, help="prepared frames waiting for inference (default 8)")
    return ap


def _body(sess, a, need_handler: bool):
    """(faces, SMPL layer for re-posing, standin flag): the torch model's own, else --smpl-model, else the stand-in."""
    layer = sess.smpl_layer
    if layer is not None:
        return layer.faces, layer, bool(layer.body_standin)
    if a.smpl_model:
        from ..body.loaders import load_body_model

        data = load_body_model(a.smpl_model)
    elif sess.info.standin_body is False:  # the graph was exported with a real SMPL body model
        raise SmplerError(f"--smpl-model: {Path(a.onnx or a.engine or '').name} was exported with a SMPL body model; "
                          "pass the same file (its faces draw the overlay, its layer re-poses smoothed parameters), "
                          "or --no-overlay without --smooth")
    else:
        from ..body.standin import make_standin_body_model

        data = make_standin_body_model(0)
    handler = None
    if need_handler:
        from ..body.layer import SMPLHandler

        handler = SMPLHandler()
        handler.set_body_model(data)
    return data.faces, handler, bool(data.standin)


def _check_args(a) -> None:
    from ..runtime import BACKENDS

    if a.backend not in BACKENDS:
        raise SmplerError(f"--backend {a.backend}: expected one of {', '.join(BACKENDS)}")
    for flag, val in (("--batch", a.batch), ("--queue", a.queue), ("--threads", a.threads),
                      ("--max-frames", a.max_frames)):
        check_positive(flag, val)
    if a.detect_every < 1:
        raise SmplerError(f"--detect-every {a.detect_every}: expected a positive integer")
    if a.detect_every > 1 and a.boxes:
        raise SmplerError("--detect-every: applies to a detector; a --boxes file already has every frame's boxes")
    if a.detect_every > 1 and a.no_track:
        raise SmplerError("--detect-every: carries boxes between detections with the tracker; drop --no-track")
    if a.focal_length is not None and not a.focal_length > 0:
        raise SmplerError(f"--focal-length {a.focal_length}: expected a positive number of pixels")
    for flag, val in (("--onnx", a.onnx), ("--engine", a.engine), ("--checkpoint", a.checkpoint),
                      ("--smpl-model", a.smpl_model)):
        if val and not Path(val).is_file():
            raise SmplerError(f"{flag} {val}: file not found")


def _check_images(source) -> None:
    """Every input image's header (a decompression bomb is refused now, not after the model loads), and no two
    images whose overlays and crops would take the same name."""
    from ..preprocess import check_image_file

    seen: dict[str, Path] = {}
    for p in source.paths:
        check_image_file(p)
        if (other := seen.setdefault(p.stem, p)) != p:
            raise SmplerError(f"{source.where}: {other.name} and {p.name} would write the same overlay/crop name "
                              f"{p.stem}.png; rename one")


@cli_main
def main(argv=None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _check_args(a)
    from ..fileio import check_output_tree, outputs, staged_dir
    from ..pipeline.crops import session_max_batch
    from ..pipeline.detect import open_detector
    from ..pipeline.runner import RunConfig
    from ..pipeline.video import open_source
    from ..render import model_label
    from ..runtime import open_session

    # Every check before any output: -o and --save-crops, the source (each image's header), the detector or
    # boxes, the session, the body model. Then the whole of -o (and --save-crops) is one transaction.
    out = check_output_tree(a.out, a.force, "-o", owns=_owns_out)
    crops_dir = check_output_tree(a.save_crops, a.force, "--save-crops", owns=_owns_crops) if a.save_crops else None
    if crops_dir is not None and _inside(crops_dir, out):  # -o is replaced as a whole at the end
        raise SmplerError(f"--save-crops {crops_dir}: is inside -o {out}; choose a folder outside it")
    source = open_source(a.source, a.max_frames, realtime=a.realtime)
    sess = detector = None
    try:
        if source.kind == "images":
            _check_images(source)
        detector = open_detector(a.detector, boxes=a.boxes, conf=a.conf, iou=a.iou, threads=a.threads,
                                 provider=a.provider)
        path = {"onnxruntime": a.onnx, "tensorrt": a.engine}.get(a.backend)
        kw = ({"checkpoint": a.checkpoint, "smpl_model": a.smpl_model} if a.backend == "torch"
              else {"provider": a.provider, "where": f"--onnx {path}", "spin_wait": False} if a.backend == "onnxruntime"
              else {"kernel_dir": kernel_dir_arg(a)})  # tensorrt: $SMPLER_KERNEL_DIR, else the smpler-aot cache
        sess = open_session(a.backend, path=path, variant=a.variant, threads=a.threads, **kw)
        need_body = not a.no_overlay or a.smooth != "none"
        faces, handler, standin_default = _body(sess, a, need_handler=a.smooth != "none") if need_body else \
            (None, None, True)
        info = sess.info  # facts an engine (or a graph without our metadata) does not record follow the flags
        standin = info.standin_body if info.standin_body is not None else standin_default
        untrained = info.untrained if info.untrained is not None else a.checkpoint is None
        label = model_label(untrained, standin)
        cfg = RunConfig(max_batch=session_max_batch(sess, a.batch), queue_size=a.queue, focal_length=a.focal_length,
                        track=not a.no_track, smooth=a.smooth, overlay=not a.no_overlay,
                        draw_joints=not a.no_joints, keep_vertices=a.save_vertices,
                        detect_every=a.detect_every)
        print(f"source: {source.description}")
        print(f"detector: {detector.label}")
        print(f"model: {a.backend} {sess.precision}, up to {cfg.max_batch} crops per call"
              + (f"; {label}" if label else ""))
        with contextlib.ExitStack() as stack:
            stack.enter_context(outputs(force=a.force))  # -o and --save-crops committed together or not at all
            crops_stage = stack.enter_context(staged_dir(crops_dir, force=a.force, flag="--save-crops",
                                                         owns=_owns_crops)) if crops_dir is not None else None
            stage = stack.enter_context(staged_dir(out, force=a.force, flag="-o", owns=_owns_out))
            result = _run(a, source, detector, sess, faces, handler, label, cfg, stage, crops_stage)
            meta = {"source": str(a.source), "source_kind": source.kind, "fps": source.fps,
                    "detector": detector.label, "backend": a.backend,
                    "precision": sess.precision.name if sess.precision else None,
                    "untrained": untrained, "standin_body": standin, "smoothing": a.smooth,
                    "crop": "preprocess.box_transform (margin 1.2, 224x224)",
                    "camera": "transl: Tz = 2 f / (s b), Tx = tx + 2 (cx - px) / (s b), Ty = ty + 2 (cy - py) / "
                              "(s b); pixel centres, x right, y down, z forward",
                    "summary": result.times.summary()}
            from ..pipeline.params import write_params

            write_params(result.people, stage / "params.npz", stage / "params.jsonl", meta)
    finally:
        source.close()
        if detector is not None:  # a YOLO detector holds an ONNX Runtime session or a TensorRT engine
            detector.close()
        if sess is not None:
            sess.close()
    names = [out / "overlay.mp4"] if result.video else [out / "overlays" / n for n in result.pngs[:3]]
    for p in [*names, out / "params.npz", out / "params.jsonl"]:
        print(f"wrote {p}")
    if len(result.pngs) > 3:
        print(f"wrote {len(result.pngs) - 3} more overlay(s) in {out / 'overlays'}")
    if result.crops:
        print(f"wrote {result.crops} crop(s) in {crops_dir}")
    print(result.times.table())
    if label:
        print(f"note: {label}")
    if "OpenCV" in detector.label:
        print("note: the built-in OpenCV detector is weaker than a learned one; pass --detector yolo.onnx "
              "(ultralytics export) for real footage")
    return 0


OUT_NAMES = ("params.npz", "params.jsonl", "overlay.mp4", "overlays")  # what a run writes in -o


def _owns_out(name: str) -> bool:
    return name in OUT_NAMES


def _owns_crops(name: str) -> bool:
    return name.lower().endswith(".png")


def _inside(a: Path, b: Path) -> bool:
    return Path(os.path.realpath(a)).is_relative_to(os.path.realpath(b))


@dataclass
class _Result:
    people: list
    times: object
    video: bool  # overlay.mp4 written
    pngs: list  # overlay file names written in overlays/
    crops: int  # crops written


def _run(a, source, detector, sess, faces, handler, label, cfg, stage: Path, crops_stage: Path | None) -> _Result:
    """The pipeline, writing overlays into `stage` (the -o being built) and crops into `crops_stage`."""
    from ..pipeline.runner import Body, run
    from ..pipeline.video import VideoWriter
    from ..preprocess import CropTransform, crop
    from ..render import save_png

    video = source.kind in ("video", "camera", "stream")
    writer = VideoWriter(stage / "overlay.mp4", source.fps) if video and cfg.overlay else None
    pngs: list[str] = []
    n_crops = 0

    def on_frame(frame, overlay, people):
        nonlocal n_crops
        if crops_stage is not None:
            for p in people:  # the crop the model saw, through the same transform
                c = crop(frame.image, CropTransform(*(float(v) for v in p.crop)))
                save_png(c, crops_stage / f"{Path(frame.name).stem}_p{p.person}.png")
                n_crops += 1
        if overlay is None:
            return
        if writer is not None:
            writer.write(overlay)
        else:
            (stage / "overlays").mkdir(exist_ok=True)
            name = Path(frame.name).stem + ".png"
            save_png(overlay, stage / "overlays" / name)
            pngs.append(name)

    try:
        people, times = run(source, detector, sess, faces=faces, body=Body(handler) if handler else None,
                            config=cfg, label=label, on_frame=on_frame)
    except BaseException:
        if writer is not None:
            writer.close(ok=False)
        raise
    wrote_video = writer is not None and writer.close() is not None
    return _Result(people, times, wrote_video, pngs, n_crops)


if __name__ == "__main__":
    sys.exit(main())
