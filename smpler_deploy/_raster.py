"""The z-buffer triangle rasteriser behind `render.rasterize` (numba; import fails without it, and `render` falls
back to PIL). Compiled once and cached on disk by numba (`cache=True`), run with the GIL released.

Conventions (see `render`): camera-space vertices (x right, y down, z away), pinhole camera with pixel centres at
integer coordinates; the depth buffer holds 1/Z (0 = empty, larger = nearer), which is linear in screen space, so
comparing it is exact for planar triangles and the shade is interpolated perspective-correctly through it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _vertex_shade(v, f, light, ambient):
    """Two-sided Lambert (|n.l|, so either winding shades the same) on area-weighted vertex normals."""
    n = np.zeros_like(v)
    for i in range(f.shape[0]):
        a, b, c = f[i, 0], f[i, 1], f[i, 2]
        e1x, e1y, e1z = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
        e2x, e2y, e2z = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        for k in (a, b, c):
            n[k, 0] += nx
            n[k, 1] += ny
            n[k, 2] += nz
    s = np.empty(v.shape[0], np.float64)
    for k in range(v.shape[0]):
        ln = math.sqrt(n[k, 0] ** 2 + n[k, 1] ** 2 + n[k, 2] ** 2)
        d = (n[k, 0] * light[0] + n[k, 1] * light[1] + n[k, 2] * light[2]) / ln if ln > 0 else 1.0
        s[k] = ambient + (1.0 - ambient) * abs(d)
    return s


@njit(cache=True, nogil=True)
def _top_left(dx, dy):
    """Whether an edge (dx, dy) of a triangle with positive area (clockwise on a y-down screen) is a top or left
    edge: pixel centres exactly on it belong to this triangle."""
    return dy < 0 or (dy == 0 and dx > 0)


@njit(cache=True, nogil=True)
def draw(v, f, nv, focal, px, py, light, ambient, z_near, inv_z, shade, mesh):
    """Rasterise faces `f` (indices into all meshes' stacked vertices `v`, mesh k = rows k*nv..) into the buffers
    (`shade` is only written, and only meaningful, where `mesh` >= 0). Returns the drawn pixels' bounding box
    (x0, x1, y0, y1), inclusive; x0 > x1 when nothing was drawn."""
    h, w = inv_z.shape
    bx0, bx1, by0, by1 = w, -1, h, -1
    nvert = v.shape[0]
    uv = np.empty((nvert, 2), np.float64)
    iz = np.empty(nvert, np.float64)
    for k in range(nvert):
        z = v[k, 2]
        iz[k] = 1.0 / z if z > z_near else -1.0
        uv[k, 0] = focal * v[k, 0] * iz[k] + px
        uv[k, 1] = focal * v[k, 1] * iz[k] + py
    sh = _vertex_shade(v, f, light, ambient)
    for i in range(f.shape[0]):
        a, b, c = f[i, 0], f[i, 1], f[i, 2]
        if iz[a] <= 0 or iz[b] <= 0 or iz[c] <= 0:
            continue
        x0, y0, x1, y1, x2, y2 = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1], uv[c, 0], uv[c, 1]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if not area != 0:  # degenerate or NaN
            continue
        if area < 0:  # two-sided: order the corners so every inside point has edge values >= 0
            b, c = c, b
            x1, y1, x2, y2 = x2, y2, x1, y1
            area = -area
        lo_x = max(min(x0, x1, x2), -1.0)
        hi_x = min(max(x0, x1, x2), float(w))
        lo_y = max(min(y0, y1, y2), -1.0)
        hi_y = min(max(y0, y1, y2), float(h))
        xa, xb = max(int(math.ceil(lo_x)), 0), min(int(math.floor(hi_x)), w - 1)
        ya, yb = max(int(math.ceil(lo_y)), 0), min(int(math.floor(hi_y)), h - 1)
        if xa > xb or ya > yb:
            continue
        bx0, bx1, by0, by1 = min(bx0, xa), max(bx1, xb), min(by0, ya), max(by1, yb)
        # edge value e_k (opposite corner k) at pixel centre (x, y), evaluated exactly per pixel: the top-left
        # rule compares it with 0, which an incremental update would blur
        dx0, dy0 = x2 - x1, y2 - y1
        dx1, dy1 = x0 - x2, y0 - y2
        dx2, dy2 = x1 - x0, y1 - y0
        t0, t1, t2 = _top_left(dx0, dy0), _top_left(dx1, dy1), _top_left(dx2, dy2)
        inv_area = 1.0 / area
        za, zb, zc = iz[a], iz[b], iz[c]
        sa, sb, sc = sh[a] * za, sh[b] * zb, sh[c] * zc
        pid = np.int16(a // nv)
        for y in range(ya, yb + 1):
            r0, r1, r2 = dx0 * (y - y1), dx1 * (y - y2), dx2 * (y - y0)
            for x in range(xa, xb + 1):
                e0 = r0 - dy0 * (x - x1)
                e1 = r1 - dy1 * (x - x2)
                e2 = r2 - dy2 * (x - x0)
                if ((e0 > 0 or (e0 == 0 and t0)) and (e1 > 0 or (e1 == 0 and t1))
                        and (e2 > 0 or (e2 == 0 and t2))):
                    z = (e0 * za + e1 * zb + e2 * zc) * inv_area
                    if z > inv_z[y, x]:
                        inv_z[y, x] = z
                        shade[y, x] = (e0 * sa + e1 * sb + e2 * sc) * inv_area / z
                        mesh[y, x] = pid
    return bx0, bx1, by0, by1


@njit(cache=True, nogil=True)
def blend(out, shade, mesh, rgb, alpha, box):
    """out (uint8 [H,W,3], in place) = (1 - alpha) out + alpha shade rgb where a mesh covers the pixel, within the
    bounding box `draw` returned."""
    x0, x1, y0, y1 = box
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1):
            if mesh[y, x] >= 0:
                s = shade[y, x] * alpha
                for c in range(3):
                    val = out[y, x, c] * (1.0 - alpha) + s * rgb[c] + 0.5
                    out[y, x, c] = np.uint8(min(max(val, 0.0), 255.0))
