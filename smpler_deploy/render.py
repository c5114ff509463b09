"""Mesh overlay without a renderer dependency: weak-perspective projection, Lambert-shaded faces drawn far-to-near
(painter's algorithm) with PIL, 2D joints on top; plus atomic OBJ/PLY writers.

Geometry: the model's camera frame has x right, y down, z away from the camera, so larger z is farther.
Vertices go to normalized crop coordinates with the weak-perspective camera (x2d = s·(X + tx), y2d = s·(Y + ty)),
then to crop pixels (u = (x2d + 1)·112, `preprocess.norm_to_crop_px`), then to image pixels with the crop's
inverse transform (`CropTransform.crop_to_image`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .body.data import SMPL_PARENTS
from .errors import SmplerError
from .fileio import atomic_path, write_text_atomic
from .preprocess import norm_to_crop_px

MESH_RGB = np.array([140, 180, 235], np.float64)  # light blue
LIGHT = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])  # towards the camera, from above-right


def to_pixels(xy_norm, transform=None) -> np.ndarray:
    """Normalized crop coords -> image pixels through the inverse crop transform (crop pixels without one)."""
    px = norm_to_crop_px(np.asarray(xy_norm, np.float64).reshape(-1, 2))
    return transform.crop_to_image(px) if transform is not None else px


def project(points, cam, transform=None) -> np.ndarray:
    """[N,3] metres + cam (s, tx, ty) -> [N,2] image pixels (crop pixels when transform is None)."""
    p = np.asarray(points, np.float64)
    s, tx, ty = (float(v) for v in np.asarray(cam, np.float64).reshape(3))
    return to_pixels(s * (p[:, :2] + [tx, ty]), transform)


def face_shading(vertices, faces, ambient: float = 0.35) -> np.ndarray:
    """Per-face intensity in [ambient, 1]: two-sided Lambert on the face normal (winding-agnostic, so a stand-in
    or mirrored mesh shades the same)."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return ambient + (1.0 - ambient) * np.abs(n @ LIGHT)


def draw_label(img, text: str):
    """Dark banner with white text at the top-left (used for untrained weights / stand-in body)."""
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = d.textbbox((6, 6), text)
    d.rectangle((x0 - 4, y0 - 3, x1 + 4, y1 + 3), fill=(0, 0, 0))
    d.text((6, 6), text, fill=(255, 230, 80))
    return img


def render_overlay(image, vertices, faces, cam, transform=None, joints2d=None, label: str | None = None,
                   alpha: float = 0.75) -> np.ndarray:
    """Draw the mesh (and optional 24 SMPL 2D joints, normalized crop coords) over `image` (uint8 HxWx3).
    Returns a new uint8 RGB array. Faces are filled far-to-near, so nearer surfaces cover farther ones."""
    from PIL import Image, ImageDraw

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise SmplerError(f"render: expected an RGB image [H,W,3], got shape {list(img.shape)}")
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or f.max(initial=0) >= len(v):
        raise SmplerError(f"render: vertices {list(v.shape)} / faces {list(f.shape)} do not form a mesh")
    base = Image.fromarray(np.ascontiguousarray(img[..., :3], dtype=np.uint8))
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    uv = project(v, cam, transform)
    shade = face_shading(v, f)
    order = np.argsort(-v[f, 2].mean(axis=1), kind="stable")  # farthest first
    tri = uv[f]  # [F,3,2]
    cols = np.clip(MESH_RGB[None] * shade[:, None], 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    visible = (hi[:, 0] >= 0) & (lo[:, 0] < w) & (hi[:, 1] >= 0) & (lo[:, 1] < h) & np.isfinite(tri).all(axis=(1, 2))
    for i in order[visible[order]]:
        c = tuple(int(x) for x in cols[i]) + (255,)
        draw.polygon([tuple(p) for p in tri[i].tolist()], fill=c, outline=c)
    a = layer.getchannel("A").point(lambda x: int(x * alpha))
    layer.putalpha(a)
    out = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    if joints2d is not None:
        j = to_pixels(joints2d, transform)
        d = ImageDraw.Draw(out)
        r = max(2, round(min(h, w) / 150))
        if len(j) == len(SMPL_PARENTS):
            for k, p in enumerate(SMPL_PARENTS):
                if p >= 0:
                    d.line([tuple(j[p]), tuple(j[k])], fill=(255, 120, 0), width=max(1, r // 2))
        for x, y in j:
            d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 60, 60), outline=(0, 0, 0))
    if label:
        draw_label(out, label)
    return np.asarray(out)


def model_label(untrained: bool, standin_body: bool) -> str | None:
    parts = (["untrained weights"] if untrained else []) + (["stand-in body model (not SMPL)"] if standin_body else [])
    return "smpler-deploy: " + ", ".join(parts) if parts else None


def save_png(image, path) -> Path:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
    return Path(path)


def write_obj(path, vertices, faces, comment: str | None = None) -> Path:
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64) + 1  # OBJ is 1-based
    head = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    body = "\n".join([*(f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v), *(f"f {a} {b} {c}" for a, b, c in f)])
    return write_text_atomic(path, head + body + "\n")


def write_ply(path, vertices, faces, colors=None, comment: str | None = None) -> Path:
    """Binary little-endian PLY (float xyz, optional uchar rgb per vertex, int32 triangle lists)."""
    v = np.asarray(vertices, np.float32)
    f = np.asarray(faces, np.int32)
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("red", "u1"), ("green", "u1"), ("blue", "u1")]
                                                       if colors is not None else [])
    va = np.empty(len(v), dtype=vdt)
    va["x"], va["y"], va["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c = np.broadcast_to(np.asarray(colors, np.uint8), (len(v), 3))
        va["red"], va["green"], va["blue"] = c[:, 0], c[:, 1], c[:, 2]
    fa = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    fa["n"], fa["idx"] = 3, f
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in vdt)
    comments = "".join(f"comment {line}\n" for line in (comment or "").splitlines())
    header = (f"ply\nformat binary_little_endian 1.0\n{comments}element vertex {len(v)}\n{props}"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_path(path, suffix=".ply") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(va.tobytes())
            fh.write(fa.tobytes())
    return Path(path)


def read_ply_counts(path) -> tuple[int, int]:
    """(vertex count, face count) from a PLY header (for tests and sanity checks)."""
    nv = nf = 0
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.decode("ascii", "replace").strip()
            if line.startswith("element vertex"):
                nv = int(line.split()[-1])
            elif line.startswith("element face"):
                nf = int(line.split()[-1])
            elif line == "end_header":
                break
    return nv, nf


def draw_boxes(image, boxes, texts=None, color=(80, 220, 80)) -> np.ndarray:
    """Person boxes (x, y, w, h image pixels) with optional captions (track ids) over a uint8 RGB image."""
    from PIL import Image, ImageDraw

    out = Image.fromarray(np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8))
    d = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 300))
    for i, (x, y, w, h) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        d.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=width)
        if texts is not None and texts[i]:
            x0, y0, x1, y1 = d.textbbox((x + 2, y + 2), str(texts[i]))
            d.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=color)
            d.text((x + 2, y + 2), str(texts[i]), fill=(0, 0, 0))
    return np.asarray(out)


def render_people(image, people, faces, label: str | None = None, alpha: float = 0.75) -> np.ndarray:
    """Several meshes over one image in original image coordinates, farthest person first so nearer people cover
    them. `people`: dicts with vertices, cam, transform (the crop's `CropTransform`), and optional joints2d
    (normalized crop coords), depth (camera-space z; larger = farther), box and text (drawn as a captioned box)."""
    out = np.asarray(image)
    order = sorted(range(len(people)), key=lambda i: -float(people[i].get("depth", 0.0)))
    for i in order:
        p = people[i]
        out = render_overlay(out, p["vertices"], faces, p["cam"], p["transform"], joints2d=p.get("joints2d"),
                             alpha=alpha)
    boxed = [p for p in people if p.get("box") is not None]
    if boxed:
        out = draw_boxes(out, [p["box"] for p in boxed], [p.get("text") for p in boxed])
    if label:
        from PIL import Image

        out = np.asarray(draw_label(Image.fromarray(out), label))
    return out
