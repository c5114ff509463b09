"""Overlay and crop cost per person on a 960x540 frame: the z-buffer rasteriser (`render.draw_meshes`: projection,
shading, rasterisation, blending), the whole overlay (`render.render_people`: joints and a captioned box too), and
the crop (`pipeline.crops.person_crops`: one affine warp per person, normalization). Goals on the 2-vCPU machine:
overlay <= 10 ms per person, crop <= 2 ms per person.

People: the stand-in body (SMPL's 6890 vertices, 13776 faces) standing 4.5-6.5 m from a camera whose focal length
is the image diagonal (smpler-run's default), 1 or 3 of them side by side and overlapping.

Usage: python benchmarks/render.py [--iters 20]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

H, W = 540, 960


def _ms(fn, iters: int) -> tuple[float, float]:
    """(median, best) of `iters` timed calls after one warm-up; the best is the least disturbed on shared cores."""
    fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts)), 1000 * min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    from smpler_deploy import render
    from smpler_deploy.body.standin import make_standin_body_model
    from smpler_deploy.pipeline.crops import person_crops
    from smpler_deploy.camera import Camera, default_focal, default_principal_point

    body = make_standin_body_model(0)
    verts = np.asarray(body.v_template, np.float64) * [1, -1, -1]  # the model's camera frame: y down, z away
    faces = np.asarray(body.faces)
    cam = Camera(default_focal((H, W)), tuple(default_principal_point((H, W))))
    people = [{"vertices": verts, "transl": t, "joints": np.zeros((24, 2)) + [480, 270], "box": [380, 40, 200, 480],
               "text": f"#{i + 1}"} for i, t in enumerate(([0.0, 0.0, 4.5], [-1.0, 0.0, 5.5], [1.0, 0.1, 6.5]))]
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    boxes = [[380, 40, 200, 480], [150, 60, 180, 420], [640, 70, 170, 400]]
    t = time.perf_counter()
    render.warm_up()
    print(f"renderer: {render.backend()} (compile or cache load {time.perf_counter() - t:.2f} s); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")
    for k in (1, 3):
        meshes = [p["vertices"] + p["transl"] for p in people[:k]]
        cells = {"meshes": _ms(lambda: render.draw_meshes(img, meshes, faces, cam), a.iters),
                 "whole overlay": _ms(lambda: render.render_people(img, people[:k], faces, cam, label="x"), a.iters),
                 "crops": _ms(lambda: person_crops(img, boxes[:k]), a.iters)}
        print(f"{k} person(s), {W}x{H}, ms per person (median / best of {a.iters}): "
              + ", ".join(f"{name} {med / k:.2f} / {best / k:.2f}" for name, (med, best) in cells.items()))


if __name__ == "__main__":
    main()
