"""Whole-pipeline throughput of smpler-run: frames/s from decoding a video to the written overlay and parameters.

A synthetic mp4 is made from photos of people that installed packages ship (scikit-image's astronaut, matplotlib's
grace_hopper), with 1 or 3 people per frame moving slowly; people come from a boxes file (where each photo was
pasted, so every frame has exactly that many people) or from the built-in OpenCV detector. The model is the
default untrained one (the pipeline's cost does not depend on the weights) exported to ONNX fp32 and int8
(`--target cpu`, ONNX Runtime's fused layout), run through `smpler-run` in-process.

Usage: python benchmarks/pipeline.py [--frames 48] [--repeats 3] [--threads 2] [--out benchmarks/reports/pipeline]
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


def run_cell(video, out, onnx, threads, detector, boxes, overlay: bool) -> dict:
    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline.params import read_params

    args = [str(video), "-o", str(out), "--force", "--backend", "onnxruntime", "--onnx", str(onnx),
            "--threads", str(threads), "--batch", "8"]
    args += ["--boxes", str(boxes)] if detector == "boxes" else ["--detector", "opencv"]
    if not overlay:
        args.append("--no-overlay")
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
    ap.add_argument("--out", default="benchmarks/reports/pipeline")
    a = ap.parse_args()
    from smpler_deploy import __version__, load_model
    from smpler_deploy.bench.machine import machine_info
    from smpler_deploy.export.onnx_export import export_onnx

    tmp = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="smpler_pipeline_"))
    tmp.mkdir(parents=True, exist_ok=True)
    graphs = {p: tmp / f"smpler_{p}.onnx" for p in ("fp32", "int8-cpu")}
    if not all(g.exists() for g in graphs.values()):
        model = load_model("smpler")
        for prec, kw in (("fp32", {"precision": "fp32"}), ("int8-cpu", {"precision": "int8", "target": "cpu"})):
            t = time.perf_counter()
            export_onnx(graphs[prec], model=model, **kw)
            print(f"exported {prec} in {time.perf_counter() - t:.1f} s")
        del model
    videos = {}
    for people in (1, 3):
        v = tmp / f"people{people}.mp4"
        videos[people] = (v, write_boxes(tmp / f"people{people}.json", make_video(v, people, a.frames)))
    cells = []
    plan = [(p, prec, "boxes", ov) for p in (1, 3) for prec in ("fp32", "int8-cpu") for ov in (True, False)]
    plan += [(p, "fp32", "opencv", True) for p in (1, 3)]
    for people, prec, det, overlay in plan:
        video, boxes = videos[people]
        runs = []
        for _ in range(a.repeats):
            load = os.getloadavg()[0]
            runs.append((run_cell(video, tmp / "out", graphs[prec], a.threads, det, boxes, overlay), load))
        runs.sort(key=lambda r: r[0]["frames_per_s"])
        s, load = runs[-1]  # the best run: the least disturbed by other work on the shared cores
        cell = {"people_per_frame": people, "precision": prec, "detector": det, "overlay": overlay,
                "frames": s["frames"], "people": s["people"], "session_calls": s["session_calls"],
                "wall_s": s["wall_s"], "frames_per_s": s["frames_per_s"],
                "frames_per_s_median": runs[len(runs) // 2][0]["frames_per_s"],
                "frames_per_s_runs": [r[0]["frames_per_s"] for r in runs], "load_avg_1min": round(load, 2),
                "stage_ms_per_frame": {k: v["ms_per_frame"] for k, v in s["stages"].items()}}
        cells.append(cell)
        print(f"{people} people, {prec}, {det}, overlay {'on' if overlay else 'off'}: "
              f"best {s['frames_per_s']:.2f} frames/s (runs {cell['frames_per_s_runs']}; {s['people']} people in "
              f"{s['frames']} frames)", flush=True)
    info = machine_info(a.threads, measure_gemm=False)
    report = {"tool": {"name": "smpler-deploy", "version": __version__}, "created": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": {"variant": "smpler", "untrained": True, "standin_body": True},
        "settings": {"frames": a.frames, "repeats": a.repeats, "video": f"{CANVAS[1]}x{CANVAS[0]} mp4, 25 fps", "threads": a.threads,
                     "batch_cap": 8, "backend": "onnxruntime (CPU)"},
        "machine": info, "cells": cells}
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
        "parameters, overlay drawing, mp4 encoding) over wall time, session loading excluded; decode/detect/crop "
        "run on a background thread and overlay/write on an output thread, both overlapping inference, so the "
        "per-stage columns add up to more than the wall time. Stage columns are "
        "ms per frame (of the best run). `boxes`: people from a boxes file (no detector cost); `opencv`: the "
        "built-in HOG + face cascade detector. Each cell ran `repeats` times: the best run is the one least "
        "disturbed by other work on these 2 shared cores (`load avg`: the 1-minute load average when it started; "
        "2.0 = both cores busy); the median and every run are listed so the spread is visible.", "",
        "| people/frame | precision | people from | overlay | frames/s (best) | median | runs | load avg | session "
        "calls | decode | detect | crop | infer | track+params | overlay | write |",
        "|---:|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r["cells"]:
        st = c["stage_ms_per_frame"]
        runs = ", ".join(f"{v:.2f}" for v in c["frames_per_s_runs"])
        lines.append(f"| {c['people_per_frame']} | {c['precision']} | {c['detector']} | "
                     f"{'mp4' if c['overlay'] else 'off'} | **{c['frames_per_s']:.2f}** | "
                     f"{c['frames_per_s_median']:.2f} | {runs} | "
                     f"{c['load_avg_1min']:.1f} | {c['session_calls']} | "
                     + " | ".join(f"{st[k]:.1f}" for k in ("decode", "detect", "crop", "infer", "track+params",
                                                             "overlay", "write")) + " |")
    lines += ["", f"Created {r['created']} by `python benchmarks/pipeline.py --frames {s['frames']} --repeats "
              f"{s['repeats']} --threads {s['threads']}` (smpler-deploy {r['tool']['version']}). CPU-only machine shared with other work: "
              "compare rows within this report."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
