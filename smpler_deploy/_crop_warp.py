"""The bilinear crop warp behind `preprocess.crops` (numba; import fails without it, and `crops` uses PIL).

It computes what PIL's `Image.transform(AFFINE, BILINEAR, fillcolor=black)` computes for the crops' axis-aligned
scale and shift, operation for operation (Pillow's libImaging/Geometry.c, `affine_transform` and
`bilinear_filter32RGB`): one sample point per output pixel centre in double precision, black where the point lies
outside the image, neighbours clamped to the edge, the interpolated value truncated to uint8. So both give the
same bytes (tests/test_preprocess_crops.py compares them) and every calibrated number stays what it was; this one
costs a fraction of PIL's, which calls a filter function per pixel and recomputes its coordinates.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _axis(size, scale, origin, extent):
    """Per output index along one axis: inside the image?, first and second neighbour (clamped), weight, and
    whether the second neighbour exists unclamped (PIL's rows: the next row only when it is inside)."""
    inside = np.zeros(size, np.bool_)
    i0 = np.zeros(size, np.int64)
    i1 = np.zeros(size, np.int64)
    has1 = np.zeros(size, np.bool_)
    d = np.zeros(size, np.float64)
    for u in range(size):
        p = scale * (u + 0.5) + origin
        if p < 0.0 or p >= extent:
            continue
        inside[u] = True
        p -= 0.5
        f = math.floor(p)
        d[u] = p - f
        i0[u] = min(max(f, 0), extent - 1)
        i1[u] = min(max(f + 1, 0), extent - 1)
        has1[u] = 0 <= f + 1 < extent
    return inside, i0, i1, has1, d


@njit(cache=True, nogil=True)
def warp_crops(image, params, out):
    """image uint8 [H,W,C]; params float64 [K,3] (scale, x origin, y origin: input = scale * (output + 0.5) +
    origin, in pixel-edge coordinates); out uint8 [K,S,S,C], written in place."""
    h, w, nc = image.shape
    size = out.shape[1]
    for k in range(params.shape[0]):
        s = params[k, 0]
        xin, x0, x1, _, dx = _axis(size, s, params[k, 1], w)
        yin, y0, y1, yhas1, dy = _axis(size, s, params[k, 2], h)
        for v in range(size):
            for u in range(size):
                if not (yin[v] and xin[u]):
                    for c in range(nc):
                        out[k, v, u, c] = 0
                    continue
                for c in range(nc):
                    a = float(image[y0[v], x0[u], c])
                    v1 = a + (float(image[y0[v], x1[u], c]) - a) * dx[u]
                    if yhas1[v]:
                        b = float(image[y1[v], x0[u], c])
                        v2 = b + (float(image[y1[v], x1[u], c]) - b) * dx[u]
                    else:
                        v2 = v1
                    out[k, v, u, c] = np.uint8(int(v1 + (v2 - v1) * dy[v]))
