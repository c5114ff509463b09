"""Whole-pipeline throughput of smpler-run: frames/s from decoding a video to the written overlay and parameters.

A synthetic mp4 is made from photos of people that installed packages ship (scikit-image's astronaut, matplotlib's
grace_hopper), with 1 or 3 people per frame moving slowly; people come from a boxes file (where each photo was
pasted, so every frame has exactly that many people) or from the built-in OpenCV detector. The model is the
default untrained one (the pipeline's cost does not depend on the weights) exported to ONNX fp32 and int8
(`--target cpu`, ONNX Runtime's fused layout), run through `smpler-run` in-process.

Next to each cell's frames/s: capture-to-result latency (p50/p99) and the frames a live source dropped, and the
session's own images/s at the same batch (8 crops per call, timed alone on the same graph and threads), so
"people/s ÷ session images/s" says how close the pipeline runs to the engine. Extra cells: the video played live
(`--realtime`, 25 fps: frames the model cannot keep up with are dropped, latency stays bounded) and the built-in
detector on every 5th frame (`--detect-every 5`).

Usage: python benchmarks/pipeline.py [--frames 48] [--repeats 3] [--threads 2] [--precisions fp32,int8-cpu]
       [--out benchmarks/reports/pipeline]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from smpler_deploy.fileio import write_text_atomic
from smpler_deploy.precision import Precision

CANVAS = (540, 960)  # (H, W): a 960x540 video
SPEED = 3  # pixels per frame


def _photos():
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        grace = np.asarray(im.convert("RGB"))
    return data.astronaut(), grace


def _resize(img, h):
    from PIL import Image

    w = round(img.shape[1] * h / img.shape[0])
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def make_video(path: Path, people: int, frames: int, fps: int = 25):
    """mp4 of `frames` frames with `people` pasted photos; returns the per-frame person boxes (x, y, w, h)."""
    import av

    astro, grace = _photos()
    tiles = [_resize(astro, 480)] if people == 1 else [_resize(astro, 400), _resize(grace, 400),
                                                      _resize(astro[:, ::-1], 400)]
    # where the person is inside each tile (fraction of the tile), by eye: head to the bottom edge
    person = [(0.2, 0.0, 0.7, 1.0), (0.1, 0.0, 0.85, 1.0), (0.1, 0.0, 0.7, 1.0)]
    H, W = CANVAS
    boxes = []
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(fps))
        s.height, s.width, s.pix_fmt = H, W, "yuv420p"
        for f in range(frames):
            canvas = np.full((H, W, 3), 60, np.uint8)
            fb = []
            n = len(tiles)
            for i, t in enumerate(tiles):
                th, tw = t.shape[:2]
                x0 = int((W / n) * i + (W / n - tw) / 2) + SPEED * f * (1 if i % 2 == 0 else -1)
                x0 = max(0, min(W - tw, x0))
                y0 = H - th
                canvas[y0:y0 + th, x0:x0 + tw] = t
                px, py, pw, ph = person[i if n > 1 else 0]
                fb.append([x0 + px * tw, y0 + py * th, pw * tw, ph * th])
            boxes.append(fb)
            for p in s.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return boxes


def write_boxes(path: Path, boxes) -> Path:
    rows = [{"frame": f, "bbox": [round(v, 1) for v in b], "track": i + 1}
            for f, fb in enumerate(boxes) for i, b in enumerate(fb)]
    path.write_text(json.dumps(rows))
    return path


BATCH = 8


def session_images_per_s(onnx, threads: int, calls: int) -> float:
    """The session alone: `calls` calls of BATCH held-out crops (one warm-up first), images over wall time."""
    from smpler_deploy.preprocess import heldout_crops
    from smpler_deploy.runtime import open_session

    x, _ = heldout_crops(BATCH)
    sess = open_session("onnxruntime", path=onnx, threads=threads)
    try:
        sess.infer(x)
        t = time.perf_counter()
        for _ in range(calls):
            sess.infer(x)
        return calls * BATCH / (time.perf_counter() - t)
    finally:
        sess.close()


def stages_alone(video: Path, boxes: Path, repeats: int = 20) -> dict:
    """Decode (ms per frame, whole file) and crop (ms per person, `person_crops` on one decoded frame's boxes)
    with nothing else running: the loop's own cost next to inference, without the contention of the run."""
    from smpler_deploy.pipeline.crops import person_crops
    from smpler_deploy.pipeline.video import open_source

    t = time.perf_counter()
    frames = [f.image for f in open_source(str(video))]
    decode_ms = (time.perf_counter() - t) * 1e3 / len(frames)
    rows = json.loads(boxes.read_text())
    b = np.array([r["bbox"] for r in rows if r["frame"] == 0], np.float64)
    person_crops(frames[0], b)  # compiles the warp once (numba caches it on disk)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        person_crops(frames[0], b)
        best = min(best, time.perf_counter() - t)
    return {"decode_ms_per_frame": round(decode_ms, 2), "crop_ms_per_person": round(best * 1e3 / len(b), 3),
            "people": len(b)}


def run_cell(video, out, onnx, threads, detector, boxes, overlay: bool, realtime: bool = False,
             detect_every: int = 1) -> dict:
    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline.params import read_params

    args = [str(video), "-o", str(out), "--force", "--backend", "onnxruntime", "--onnx", str(onnx),
            "--threads", str(threads), "--batch", str(BATCH)]
    args += ["--boxes", str(boxes)] if detector == "boxes" else ["--detector", "opencv"]
    if not overlay:
        args.append("--no-overlay")
    if realtime:
        args.append("--realtime")
    if detect_every > 1:
        args += ["--detect-every", str(detect_every)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    if rc != 0:
        raise SystemExit(f"smpler-run failed ({rc}): {' '.join(args)}\n{buf.getvalue()}")
    _, meta = read_params(out / "params.npz")
    return meta["summary"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell; the best is reported, with the median")
    ap.add_argument("--work", default=None, help="folder for the ONNX graphs and videos (reused when present)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,int8-cpu", help="graphs to run (fp32, int8-cpu)")
    ap.add_argument("--out", default="benchmarks/reports/pipeline")
    a = ap.parse_args()
    precisions = [p for p in a.precisions.split(",") if p]
    from smpler_deploy import __version__, load_model
    from smpler_deploy.bench.machine import machine_info
    from smpler_deploy.export.onnx_export import export_onnx

    tmp = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="smpler_pipeline_"))
    tmp.mkdir(parents=True, exist_ok=True)
    graphs = {p: tmp / f"smpler_{p}.onnx" for p in precisions}
    if not all(g.exists() for g in graphs.values()):
        model = load_model("smpler")
        for prec, kw in (("fp32", {"precision": Precision("fp32")}), ("int8-cpu", {"precision": Precision("int8", "cpu")})):
            if prec not in graphs or graphs[prec].exists():
                continue
            t = time.perf_counter()
            export_onnx(graphs[prec], model=model, **kw)
            print(f"exported {prec} in {time.perf_counter() - t:.1f} s")
        del model
    videos = {}
    for people in (1, 3):
        v = tmp / f"people{people}.mp4"
        videos[people] = (v, write_boxes(tmp / f"people{people}.json", make_video(v, people, a.frames)))
    alone = {p: stages_alone(*videos[p]) for p in videos}
    print(f"stages alone: {alone}", flush=True)
    session_ips = {}
    for prec in precisions:
        session_ips[prec] = max(session_images_per_s(graphs[prec], a.threads, max(2, a.frames // BATCH))
                                for _ in range(a.repeats))
        print(f"session alone, {prec}, batch {BATCH}: {session_ips[prec]:.2f} images/s", flush=True)
    cells = []
    # (people per frame, precision, people from, overlay, --realtime, --detect-every)
    plan = [(p, prec, "boxes", ov, False, 1) for p in (1, 3) for prec in precisions for ov in (True, False)]
    plan += [(p, precisions[0], "opencv", True, False, 1) for p in (1, 3)]
    plan += [(1, precisions[0], "opencv", True, False, 5), (1, precisions[0], "boxes", True, True, 1)]
    for people, prec, det, overlay, realtime, every in plan:
        video, boxes = videos[people]
        runs = []
        for _ in range(a.repeats):
            load = os.getloadavg()[0]
            runs.append((run_cell(video, tmp / "out", graphs[prec], a.threads, det, boxes, overlay, realtime,
                                  every), load))
        runs.sort(key=lambda r: r[0]["frames_per_s"])
        s, load = runs[-1]  # the best run: the least disturbed by other work on the shared cores
        people_per_s = s["people"] / s["wall_s"] if s["wall_s"] else 0.0
        cell = {"people_per_frame": people, "precision": prec, "detector": det, "overlay": overlay,
                "realtime": realtime, "detect_every": every,
                "frames": s["frames"], "people": s["people"], "session_calls": s["session_calls"],
                "wall_s": s["wall_s"], "frames_per_s": s["frames_per_s"],
                "frames_per_s_median": runs[len(runs) // 2][0]["frames_per_s"],
                "frames_per_s_runs": [r[0]["frames_per_s"] for r in runs], "load_avg_1min": round(load, 2),
                "frames_captured": s["frames_captured"], "frames_dropped": s["frames_dropped"],
                "latency_ms": s["latency_ms"], "session_images_per_s": round(session_ips[prec], 3),
                "vs_session": round(people_per_s / session_ips[prec], 3),
                "stage_ms_per_frame": {k: v["ms_per_frame"] for k, v in s["stages"].items()}}
        cells.append(cell)
        print(f"{people} people, {prec}, {det}{f' every {every}' if every > 1 else ''}, overlay "
              f"{'on' if overlay else 'off'}{', realtime' if realtime else ''}: best {s['frames_per_s']:.2f} "
              f"frames/s = {cell['vs_session']:.0%} of the session's images/s (runs {cell['frames_per_s_runs']}; "
              f"{s['people']} people in {s['frames']} frames, {s['frames_dropped']} dropped; latency p50/p99 "
              f"{s['latency_ms']['p50']}/{s['latency_ms']['p99']} ms)", flush=True)
    info = machine_info(a.threads, measure_gemm=False)
    report = {"tool": {"name": "smpler-deploy", "version": __version__}, "created": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": {"variant": "smpler", "untrained": True, "standin_body": True},
        "settings": {"frames": a.frames, "repeats": a.repeats, "video": f"{CANVAS[1]}x{CANVAS[0]} mp4, 25 fps", "threads": a.threads,
                     "batch_cap": BATCH, "backend": "onnxruntime (CPU)", "precisions": precisions},
        "machine": info, "session_images_per_s": {k: round(v, 3) for k, v in session_ips.items()},
        "stages_alone": {str(k): v for k, v in alone.items()}, "cells": cells}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.md", render_md(report))
    print(render_md(report))


def render_md(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    lines = [
        "# smpler-run: whole-pipeline throughput", "",
        f"{m.get('cpu')}, {m.get('usable_cores')} usable cores, ONNX Runtime {m['libraries'].get('onnxruntime')} "
        f"(CPU, {s['threads']} threads), no GPU. Synthetic {s['video']}, {s['frames']} frames, made from "
        "scikit-image's astronaut and matplotlib's grace_hopper photos pasted 1 or 3 times per frame. "
        "**Default untrained model and stand-in body model**: the pipeline's cost does not depend on the weights, "
        "but the meshes are not poses of the people in the video.", "",
        "Frames/s is the whole loop (decode, detect, crop, one batched session call per group of frames, tracking, "
        "parameters, overlay drawing, mp4 encoding) over wall time, session loading excluded; decode runs on its "
        "own thread, detect/crop on a prepare thread and overlay/write on an output thread, all overlapping "
        "inference, so the per-stage columns add up to more than the wall time. Stage columns are "
        "ms per frame (of the best run). `boxes`: people from a boxes file (no detector cost); `opencv`: the "
        "built-in HOG + face cascade detector (`/5`: on every 5th frame, the tracker carrying the boxes between); "
        "`live`: the file played at its 25 fps (`--realtime`), stale frames dropped. `vs session`: people/s of "
        "the pipeline ÷ the session's own images/s at batch 8 (timed alone: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r.get("session_images_per_s", {}).items()) + " images/s). "
        "Latency: from the decoder delivering a frame to its finished result (overlay drawn, handed to the "
        "writer), p50/p99 over the run's frames. Each cell ran `repeats` times: the best run is the one least "
        "disturbed by other work on these 2 shared cores (`load avg`: the 1-minute load average when it started; "
        "2.0 = both cores busy); the median and every run are listed so the spread is visible.", "",
        "| people/frame | precision | people from | overlay | frames/s (best) | median | runs | vs session | "
        "latency p50 / p99 ms | dropped | load avg | session calls | decode | detect | crop | infer | track+params "
        "| overlay | write |",
        "|---:|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    alone = r.get("stages_alone")
    if alone:
        lines[-2:-2] = ["Timed alone (nothing else running): decode " + ", ".join(
            f"{v['decode_ms_per_frame']:.1f} ms per frame ({k} {'person' if k == '1' else 'people'})"
            for k, v in alone.items()) + "; crop + normalize " + ", ".join(
            f"{v['crop_ms_per_person']:.2f} ms per person ({k} per frame)" for k, v in alone.items())
            + ". The stage columns below are wall time on their threads during the run, where they share the "
              "cores with inference.", ""]
    for c in r["cells"]:
        st = c["stage_ms_per_frame"]
        runs = ", ".join(f"{v:.2f}" for v in c["frames_per_s_runs"])
        lat = c.get("latency_ms") or {}
        lat_txt = "-" if lat.get("p50") is None else f"{lat['p50']:.0f} / {lat['p99']:.0f}"
        det = c["detector"] + (f" /{c['detect_every']}" if c.get("detect_every", 1) > 1 else "")
        src = ", live" if c.get("realtime") else ""
        vs = "-" if c.get("vs_session") is None else f"{c['vs_session']:.0%}"
        lines.append(f"| {c['people_per_frame']} | {c['precision']} | {det} | "
                     f"{'mp4' if c['overlay'] else 'off'}{src} | **{c['frames_per_s']:.2f}** | "
                     f"{c['frames_per_s_median']:.2f} | {runs} | {vs} | {lat_txt} | "
                     f"{c.get('frames_dropped', 0)} of {c.get('frames_captured', c['frames'])} | "
                     f"{c['load_avg_1min']:.1f} | {c['session_calls']} | "
                     + " | ".join(f"{st[k]:.1f}" for k in ("decode", "detect", "crop", "infer", "track+params",
                                                             "overlay", "write")) + " |")
    lines += ["", f"Created {r['created']} by `python benchmarks/pipeline.py --frames {s['frames']} --repeats "
              f"{s['repeats']} --threads {s['threads']}"
              + (f" --precisions {','.join(s['precisions'])}" if s.get("precisions") else "")
              + f"` (smpler-deploy {r['tool']['version']}). CPU-only machine shared with other work: "
              "compare rows within this report."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
