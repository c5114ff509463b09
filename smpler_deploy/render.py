"""Mesh overlays: people's meshes rasterised with a z-buffer through one pinhole camera, smooth (Gouraud) shaded,
blended over the frame, 2D joints and boxes drawn on top; plus atomic OBJ/PLY writers.

Camera (what the field draws SMPL overlays with, and what the parameters file records): the body in camera space is
`vertices + transl`, `transl` the translation derived from the crop's weak-perspective camera and a focal length
(`camera.camera_translation`), projected by the pinhole camera u = f·X/Z + p_x, v = f·Y/Z + p_y (`camera.Camera`) with
pixel centres at integer coordinates (pixel (i, j) covers x in [j - 0.5, j + 0.5]). The model's camera frame has x
right, y down, z away from the camera. All people of a frame share the camera, so one z-buffer resolves who is in
front of whom, per pixel.

Rasteriser: a numba-compiled (LLVM) scan over each triangle's bounding box with edge functions, the top-left rule
for shared edges (a pixel centre on an edge belongs to exactly one of the two triangles), 1/z interpolated in screen
space and the shade interpolated perspective-correctly. It runs with the GIL released, so drawing on the output
thread overlaps inference. Chosen after measuring the candidates on the project's 2-vCPU machine (stand-in body,
13776 faces, 960x540 frame, people 4.5-6.5 m away, drawing + blending, median of 10-30; the machine was shared):

  numba JIT rasteriser, first version     ~6 ms for 1 person, ~13 ms for 3 (load average 0.5)
  numba, this module (frame buffers kept  ~2 ms for 1 person, ~3-9 ms for 3 (load average 6-8);
    per thread, blend within the drawn box)   `benchmarks/render.py` times it, with the 2D marks and the crops
  moderngl 5.13 + EGL (Mesa llvmpipe)     ~15 ms for 1 person, ~26 ms for 3 incl. read-back (load average 0.5),
                                          and it needs the system's libEGL/Mesa: pip alone gives no context
  PIL polygons, painter's order (before)  ~100 ms per person, wrong where surfaces interleave in depth
  pyrender / open3d OffscreenRenderer     the same llvmpipe OpenGL underneath on a CPU host (pyrender via PyOpenGL
                                          + OSMesa/EGL; open3d a ~400 MB wheel): not tried
  nvdiffrast                              needs CUDA and a compiler at install time; no use on a CPU host

numba installs from a wheel on any Linux x86-64/aarch64 host with no system libraries, and its CUDA target
(numba-cuda) compiles kernels of the same language for a GPU; a CUDA twin of this rasteriser (one thread per face,
an atomic max on packed depth|face per pixel, then a per-pixel resolve) is not written yet: overlays run on the CPU,
on the output thread, even where the model runs on a GPU. Without numba (an install without the [run] extra)
overlays fall back to PIL polygons in painter's order (far to near over all people's faces): slower, and only
approximately right where surfaces interleave.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .body.data import SMPL_PARENTS
from .camera import Camera, camera_translation, default_focal, default_principal_point
from .errors import SmplerError
from .fileio import atomic_path, write_text_atomic
from .preprocess import CROP_SIZE, CropTransform, to_pixels

MESH_RGB = np.array([140, 180, 235], np.float64)  # light blue
BOX_RGB = (80, 220, 80)
LIGHT = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])  # towards the camera, from above-right
AMBIENT = 0.35
Z_NEAR = 1e-3  # metres: a triangle with a vertex nearer than this (or behind the camera) is not drawn


def face_shading(vertices, faces, ambient: float = AMBIENT) -> np.ndarray:
    """Per-face intensity in [ambient, 1]: two-sided Lambert on the face normal (winding-agnostic, so a stand-in
    or mirrored mesh shades the same). The painter's fallback shades faces with it."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return ambient + (1.0 - ambient) * np.abs(n @ LIGHT)


@dataclass
class Raster:
    """Per pixel: 1/Z of the nearest surface (0 where none), its shade in [AMBIENT, 1], and which mesh (-1 none)."""

    inv_depth: np.ndarray  # float32 [H,W]
    shade: np.ndarray  # float32 [H,W] (undefined where mesh < 0)
    mesh: np.ndarray  # int16 [H,W]
    box: tuple = (0, -1, 0, -1)  # x0, x1, y0, y1 (inclusive) around every drawn pixel

    @property
    def depth(self) -> np.ndarray:
        """Camera-space Z per pixel, inf where no mesh."""
        with np.errstate(divide="ignore"):
            return np.where(self.mesh >= 0, 1.0 / self.inv_depth, np.inf).astype(np.float32)


def _numba():
    try:
        from . import _raster
    except ImportError:  # numba is in the [run] extra
        return None
    return _raster


def backend() -> str:
    """'numba' (z-buffer) or 'pil' (painter's fallback when numba is not installed)."""
    return "numba" if _numba() is not None else "pil"


def warm_up() -> None:
    """Compile the rasteriser (or load it from numba's cache) now rather than on the first frame."""
    if _numba() is not None:
        rasterize([np.array([[0.0, 0, 1], [1, 0, 1], [0, 1, 1]])], np.array([[0, 1, 2]]), Camera(1.0, (0.0, 0.0)),
                  (2, 2))


def _check_meshes(meshes, faces) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise SmplerError(f"render: faces {list(f.shape)} ({f.dtype}) are not integer triangles [F,3]")
    vs = [np.asarray(v, np.float64) for v in meshes]
    for v in vs:
        if (v.ndim != 2 or v.shape[1] != 3 or len(v) != len(vs[0]) or f.max(initial=0) >= len(v)
                or f.min(initial=0) < 0):
            raise SmplerError(f"render: vertices {list(v.shape)} / faces {list(f.shape)} do not form a mesh "
                              "(every person's mesh has the same vertex count, faces index into it)")
    return (np.concatenate(vs) if vs else np.zeros((0, 3))), f.astype(np.int64)


def _new_raster(h: int, w: int) -> Raster:
    # shade is written wherever a mesh is and read nowhere else: it needs no clearing
    return Raster(np.zeros((h, w), np.float32), np.empty((h, w), np.float32), np.full((h, w), -1, np.int16))


_THREAD_BUFFERS = threading.local()


def _reused_raster(h: int, w: int) -> Raster:
    """The calling thread's buffers for an h x w frame, cleared where the last frame drew: fresh ones would be
    faulted in page by page on every frame, which costs more than drawing a person."""
    r = getattr(_THREAD_BUFFERS, "raster", None)
    if r is None or r.mesh.shape != (h, w):
        r = _THREAD_BUFFERS.raster = _new_raster(h, w)
    else:
        x0, x1, y0, y1 = r.box
        r.inv_depth[y0:y1 + 1, x0:x1 + 1] = 0
        r.mesh[y0:y1 + 1, x0:x1 + 1] = -1
        r.box = (0, -1, 0, -1)
    return r


def rasterize(meshes, faces, camera: Camera, hw: tuple[int, int], _into: Raster | None = None) -> Raster:
    """Camera-space meshes (a list of [N,3] arrays sharing `faces`) -> a `Raster` of an H x W image, all meshes in
    one z-buffer (nearest surface wins per pixel)."""
    mod = _numba()
    if mod is None:
        raise SmplerError("render: the z-buffer rasteriser needs numba (pip install 'smpler-deploy[run]')")
    v, f = _check_meshes(meshes, faces)
    n = len(meshes)
    nv = v.shape[0] // max(n, 1)
    all_f = np.concatenate([f + k * nv for k in range(n)]) if n else f[:0]
    h, w = (int(x) for x in hw)
    r = _into if _into is not None else _new_raster(h, w)
    px, py = (float(c) for c in camera.principal_point)
    r.box = mod.draw(np.ascontiguousarray(v), all_f, nv, float(camera.focal), px, py, LIGHT, AMBIENT, Z_NEAR,
                     r.inv_depth, r.shade, r.mesh)
    return r


def _painter(image: np.ndarray, meshes, faces, camera: Camera, alpha: float) -> np.ndarray:
    """Fallback without numba: every person's faces filled far to near with PIL."""
    from PIL import Image, ImageDraw

    v, f = _check_meshes(meshes, faces)
    base = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    nv = v.shape[0] // max(len(meshes), 1)
    allf = np.concatenate([f + k * nv for k in range(len(meshes))]) if len(meshes) else f[:0]
    z = v[:, 2]
    ok = (z[allf] > Z_NEAR).all(axis=1)
    allf = allf[ok]
    uv = camera.project(np.column_stack([v[:, :2], np.maximum(z, Z_NEAR)]))
    cols = np.clip(MESH_RGB[None] * face_shading(v, allf)[:, None], 0, 255).astype(np.uint8)
    for i in np.argsort(-z[allf].mean(axis=1), kind="stable"):  # farthest first
        c = tuple(int(x) for x in cols[i]) + (255,)
        draw.polygon([tuple(p) for p in uv[allf[i]].tolist()], fill=c, outline=c)
    layer.putalpha(layer.getchannel("A").point(lambda x: int(x * alpha)))
    return np.asarray(Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB"))


def draw_meshes(image, meshes, faces, camera: Camera, alpha: float = 0.75) -> np.ndarray:
    """Camera-space meshes blended over a uint8 RGB image (a new array), nearest surface in front."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise SmplerError(f"render: expected an RGB image [H,W,3], got shape {list(img.shape)}")
    if not len(meshes):
        return np.array(img[..., :3], np.uint8, copy=True)
    if _numba() is None:
        return _painter(img, meshes, faces, camera, alpha)
    r = rasterize(meshes, faces, camera, img.shape[:2], _into=_reused_raster(*img.shape[:2]))
    out = np.array(img[..., :3], np.uint8, copy=True)
    _numba().blend(out, r.shade, r.mesh, MESH_RGB, float(alpha), r.box)
    return out


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
    """One person from a crop's outputs (smpler-demo): the weak-perspective `cam` of the crop `transform` (crop
    pixels = image pixels when None) becomes the pinhole camera's translation for the image's default focal length
    and principal point, as smpler-run records it; optional 24 SMPL 2D joints in normalized crop coords."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise SmplerError(f"render: expected an RGB image [H,W,3], got shape {list(img.shape)}")
    t = transform if transform is not None else CropTransform((CROP_SIZE - 1) / 2, (CROP_SIZE - 1) / 2, CROP_SIZE)
    hw = img.shape[:2]
    camera = Camera(default_focal(hw), tuple(default_principal_point(hw)))
    transl = camera_translation(cam, t, camera.focal, camera.principal_point)
    person = {"vertices": vertices, "transl": transl,
              "joints": None if joints2d is None else to_pixels(joints2d, t)}
    return render_people(img, [person], faces, camera, label=label, alpha=alpha)


def _draw_joints(d, joints_px, r: int) -> None:
    """24 SMPL joints (image pixels) as dots on the kinematic tree's bones, on a PIL ImageDraw."""
    for j in joints_px:
        j = np.asarray(j, np.float64).reshape(-1, 2)
        if len(j) == len(SMPL_PARENTS):
            for k, p in enumerate(SMPL_PARENTS):
                if p >= 0:
                    d.line([tuple(j[p]), tuple(j[k])], fill=(255, 120, 0), width=max(1, r // 2))
        for x, y in j:
            d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 60, 60), outline=(0, 0, 0))


def _draw_boxes(d, boxes, texts, color, width: int) -> None:
    for i, (x, y, w, h) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        d.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=width)
        if texts is not None and texts[i]:
            x0, y0, x1, y1 = d.textbbox((x + 2, y + 2), str(texts[i]))
            d.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=color)
            d.text((x + 2, y + 2), str(texts[i]), fill=(0, 0, 0))


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


def render_people(image, people, faces, camera: Camera | None, label: str | None = None,
                  alpha: float = 0.75) -> np.ndarray:
    """Several people over one frame in one z-buffer pass (`draw_meshes`), then their joints, boxes and the label.
    `people`: dicts with vertices ([N,3], body frame), transl ([3], camera space: the mesh is vertices + transl)
    and optional joints ([24,2] image pixels), box (x, y, w, h) and text (the box's caption). `camera` may be None
    only when there are no people."""
    meshes = [np.asarray(p["vertices"], np.float64) + np.asarray(p["transl"], np.float64).reshape(1, 3)
              for p in people]
    out = draw_meshes(image, meshes, faces, camera, alpha)
    joints = [p["joints"] for p in people if p.get("joints") is not None]
    boxed = [p for p in people if p.get("box") is not None]
    if not (joints or boxed or label):
        return out
    from PIL import Image, ImageDraw

    img = Image.fromarray(out)  # one PIL round trip for all 2D marks
    d = ImageDraw.Draw(img)
    _draw_joints(d, joints, max(2, round(min(img.size) / 150)))
    _draw_boxes(d, [p["box"] for p in boxed], [p.get("text") for p in boxed], BOX_RGB,
                max(1, round(min(img.size) / 300)))
    if label:
        draw_label(img, label)
    return np.asarray(img)
