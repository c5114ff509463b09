"""The stand-in body's surface (`body_mesh`): SMPL's vertex and face counts on a smooth synthetic body.

A closed genus-0 mesh is built topologically (a capped "torso+head" tube with four limb tubes grown out of
rectangular grid patches, so V = 6890 and F = 2V - 4 = 13776 exactly), then relaxed onto a smooth implicit body
(smooth union of round cones around SMPL's mean rest joints, `REST_JOINTS`). Deterministic; `standin` derives the
model's arrays from it.
"""

from __future__ import annotations

import numpy as np

from .data import NUM_FACES, NUM_VERTS

# Approximate mean rest joints of SMPL's neutral model (metres; y up, +x = subject's left, +z = forward).
REST_JOINTS = np.array([
    [-0.002, -0.241, 0.029], [0.059, -0.323, 0.010], [-0.060, -0.330, 0.015], [0.004, -0.120, -0.004],
    [0.110, -0.714, 0.011], [-0.111, -0.718, 0.009], [0.004, 0.020, 0.005], [0.073, -1.106, -0.034],
    [-0.074, -1.108, -0.039], [0.004, 0.078, 0.030], [0.120, -1.163, 0.084], [-0.119, -1.164, 0.088],
    [-0.003, 0.288, -0.022], [0.079, 0.195, -0.014], [-0.082, 0.193, -0.019], [0.005, 0.353, 0.033],
    [0.173, 0.230, -0.019], [-0.175, 0.226, -0.019], [0.438, 0.214, -0.040], [-0.444, 0.215, -0.048],
    [0.700, 0.221, -0.044], [-0.706, 0.222, -0.046], [0.787, 0.212, -0.055], [-0.791, 0.214, -0.056],
], dtype=np.float64)

_S, _T, _LEG_RINGS, _ARM_RINGS = 48, 48, 43, 35  # chosen so the vertex count is exactly 6890
_LEG_PATCH, _ARM_PATCH = (7, 10), (5, 8)  # (rings, segments) of the torso cells a limb replaces


def body_mesh() -> tuple[np.ndarray, np.ndarray]:
    """(vertices [6890,3] float64, faces [13776,3] int64, outward) of the relaxed stand-in surface, rest pose."""
    V, F, axes = _build_mesh()
    return _relax(V, F, axes, _primitives()), F


def _mirror(p):
    return np.array([-p[0], p[1], p[2]])


# ----------------------------------------------------------------------------------------------------------------
# Implicit body: smooth union of (optionally axis-scaled) round cones
# ----------------------------------------------------------------------------------------------------------------

def _primitives():
    J = REST_JOINTS
    prims = []  # (a, b, ra, rb, coordinate scale)
    one = np.ones(3)
    torso = [((0, -0.31, 0.0), 0.100), ((0, -0.21, 0.0), 0.117), ((0, -0.06, 0.01), 0.100),
             ((0, 0.10, 0.02), 0.110), ((0, 0.19, 0.0), 0.095)]
    tscale = np.array([1 / 1.5, 1, 1])  # torso is ~1.5x wider than deep
    for (a, ra), (b, rb) in zip(torso[:-1], torso[1:]):
        prims.append((np.array(a), np.array(b), ra, rb, tscale))
    prims.append((np.array([0, 0.22, -0.02]), np.array([0, 0.37, 0.0]), 0.055, 0.05, one))  # neck
    hs = np.array([0.1 / 0.078, 0.1 / 0.105, 0.1 / 0.095])  # head ellipsoid
    prims.append((np.array([0, 0.44, 0.02]), np.array([0, 0.44, 0.02]), 0.1, 0.1, hs))
    for s in (1, -1):
        m = (lambda p: np.asarray(p, float)) if s == 1 else _mirror
        li = (0, 4, 7, 10, 13, 16, 18, 20, 22) if s == 1 else (0, 5, 8, 11, 14, 17, 19, 21, 23)
        _, knee, ankle, _, collar, sh, elb, wri, _ = (J[i] for i in li)
        prims += [
            (m([0.085, -0.30, 0.0]), knee, 0.090, 0.055, one),  # thigh
            (knee, ankle, 0.052, 0.036, one),  # shank
            (ankle, m([0.074, -1.15, -0.01]), 0.036, 0.04, one),  # ankle
            (m([0.072, -1.16, -0.055]), m([0.125, -1.175, 0.16]), 0.036, 0.028, np.array([1, 1.2, 1])),  # foot
            (np.array([0, 0.25, -0.03]), collar, 0.06, 0.06, one),  # trapezius
            (collar, sh, 0.06, 0.055, one),  # shoulder
            (sh, elb, 0.050, 0.038, one),  # upper arm
            (elb, wri, 0.038, 0.027, one),  # forearm
            (wri, m([0.87, 0.214, -0.05]), 0.04, 0.035, np.array([1, 2.2, 1])),  # flat hand
        ]
    return prims


def _sdf_grad(p: np.ndarray, prims, k: float = 0.012):
    """Smooth-union distance (approximate SDF) and its analytic gradient."""
    d = np.empty((len(prims), len(p)))
    g = np.empty((len(prims), len(p), 3))
    for i, (a, b, ra, rb, sc) in enumerate(prims):
        q = p * sc - a * sc
        ab = (b - a) * sc
        ab2 = max(ab @ ab, 1e-12)
        t_raw = (q @ ab) / ab2
        t = np.clip(t_raw, 0.0, 1.0)
        q -= t[:, None] * ab
        dist = np.sqrt(np.einsum("ij,ij->i", q, q))
        d[i] = dist - (ra + t * (rb - ra))
        inside = ((t_raw > 0) & (t_raw < 1))[:, None]
        g[i] = sc * (q / np.maximum(dist, 1e-12)[:, None] - inside * ((rb - ra) / ab2) * ab)
    m = d.min(0)
    e = np.exp(-(d - m) / k)
    es = e.sum(0)
    # smooth min blends joints without creases; its gradient is the softmin-weighted mean of the parts'
    return m - k * np.log(es), np.einsum("nv,nvc->vc", e / es, g)


def _project(p, prims, steps=2):
    for _ in range(steps):
        f, g = _sdf_grad(p, prims)
        p = p - (f / np.maximum((g * g).sum(1), 1e-6))[:, None] * g  # Newton step onto the zero level set
    return p


# ----------------------------------------------------------------------------------------------------------------
# Topology: torso tube + limb tubes grown out of grid patches
# ----------------------------------------------------------------------------------------------------------------

_TORSO_PROFILE = np.array([  # y, half-width x, half-depth z, z centre
    [-0.37, 0.0, 0.0, 0.0], [-0.35, 0.10, 0.08, 0.0], [-0.30, 0.16, 0.11, 0.0], [-0.22, 0.175, 0.115, 0.0],
    [-0.10, 0.15, 0.105, 0.01], [0.00, 0.145, 0.10, 0.01], [0.12, 0.165, 0.11, 0.02], [0.22, 0.175, 0.095, 0.0],
    [0.27, 0.10, 0.07, -0.01], [0.30, 0.055, 0.055, 0.0], [0.36, 0.06, 0.065, 0.01], [0.40, 0.08, 0.095, 0.02],
    [0.45, 0.08, 0.10, 0.02], [0.50, 0.065, 0.08, 0.015], [0.54, 0.03, 0.04, 0.01], [0.545, 0.0, 0.0, 0.01],
])


def _torso_grid():
    prof = _TORSO_PROFILE
    seg = np.linalg.norm(np.diff(prof[:, :2], axis=0), axis=1)
    arc = np.concatenate([[0], np.cumsum(seg)])
    s = np.linspace(0, arc[-1], _T + 2)[1:-1]  # ring arc positions, poles excluded
    y, rx, rz, zc = (np.interp(s, arc, prof[:, c]) for c in range(4))
    th = 2 * np.pi * np.arange(_S) / _S  # theta=0 -> +x (left), pi/2 -> +z (front)
    pos = np.stack([rx[:, None] * np.cos(th), np.repeat(y[:, None], _S, 1),
                    zc[:, None] + rz[:, None] * np.sin(th)], -1)
    return pos, y, prof[0, :3] * [0, 1, 0], prof[-1, :3] * [0, 1, 0] + [0, 0, prof[-1, 3]]


def _frame(d):
    d = d / np.linalg.norm(d)
    a = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    return d, a, np.cross(d, a)


def _rotate_to(v, d0, d1):
    """Minimal rotation taking unit d0 to unit d1, applied to v [..,3] (parallel transport of the ring frame)."""
    c, axis = float(d0 @ d1), np.cross(d0, d1)
    s = np.linalg.norm(axis)
    if s < 1e-9:
        return v
    k = axis / s
    return v * c + np.cross(k, v) * s + np.outer(v @ k, k) * (1 - c)


def _polyline(points, n_rings, cap, m=3):
    """Ring centres along a polyline (first point excluded) + the end point: evenly spaced, except the last m rings,
    which sit on latitudes of the rounded end (radius `cap`) so the tip is a dome, not a long cone."""
    pts = np.asarray(points, float)
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    phi = np.pi / 2 * np.arange(m, 0, -1) / (m + 1)
    s = np.concatenate([np.linspace(0, arc[-1] - cap, n_rings - m + 1)[1:], arc[-1] - cap * (1 - np.cos(phi)),
                        [arc[-1]]])
    return np.stack([np.interp(s, arc, pts[:, c]) for c in range(3)], 1), s / arc[-1]


def _build_mesh():
    grid, ring_y, bottom, top = _torso_grid()
    vid = -np.ones((_T, _S), np.int64)
    J = REST_JOINTS
    limbs = []  # (patch ring range, patch centre segment, patch width, path, radii along path, ring count, tip radius)
    nL, nA = _LEG_PATCH, _ARM_PATCH
    r_arm = int(np.argmin(np.abs(ring_y - 0.16))) - nA[0] // 2
    for s, jc, li in ((1, 0, (4, 7)), (-1, _S // 2, (5, 8))):
        m = (lambda p: np.asarray(p, float)) if s == 1 else _mirror
        leg_path = [J[li[0]] + [0, 0.05, 0], J[li[0]], J[li[1]], J[li[1]] + [0, -0.045, 0.015],
                    m([0.10, -1.17, 0.06]), m([0.125, -1.175, 0.188])]  # ends on the toe surface
        limbs.append(((1, 1 + nL[0]), jc, nL[1], leg_path, [0.085, 0.05, 0.035, 0.03, 0.03, 0.02], _LEG_RINGS, 0.028))
        arm_path = [J[16 if s == 1 else 17], J[18 if s == 1 else 19], J[20 if s == 1 else 21],
                    m([0.79, 0.214, -0.05]), m([0.905, 0.214, -0.05])]  # ends on the fingertip surface
        arm_radii = [0.05, 0.038, 0.028, 0.025, 0.012]
        limbs.append(((r_arm, r_arm + nA[0]), jc, nA[1], arm_path, arm_radii, _ARM_RINGS, 0.035))

    removed_cells = np.zeros((_T - 1, _S), bool)
    keep = np.ones((_T, _S), bool)
    for (r0, r1), jc, b, *_ in limbs:
        js = (jc + np.arange(-b // 2, b // 2)) % _S
        removed_cells[r0:r1][:, js] = True
        keep[r0 + 1:r1][:, (jc + np.arange(-b // 2 + 1, b // 2)) % _S] = False
    verts = [bottom, top]
    vid[keep] = np.arange(2, 2 + keep.sum())
    verts += list(grid[keep])
    axes = [np.zeros(3)] * len(verts)  # torso: free tangential relaxation
    faces = []
    j1 = (np.arange(_S) + 1) % _S
    for j in range(_S):  # pole fans
        faces.append((0, vid[0, j1[j]], vid[0, j]))
        faces.append((1, vid[-1, j], vid[-1, j1[j]]))
    for i in range(_T - 1):
        for j in range(_S):
            if not removed_cells[i, j]:
                a, b_, c, d = vid[i, j], vid[i, j1[j]], vid[i + 1, j1[j]], vid[i + 1, j]
                faces += [(a, b_, c), (a, c, d)]

    for (r0, r1), jc, b, path, radii, n_rings, cap in limbs:
        lo, hi = jc - b // 2, jc + b // 2
        loop = ([(r0, j) for j in range(lo, hi)] + [(i, hi) for i in range(r0, r1)]
                + [(r1, j) for j in range(hi, lo, -1)] + [(i, lo) for i in range(r1, r0, -1)])
        loop_ids = np.array([vid[i, j % _S] for i, j in loop])
        bpos = np.array(verts)[loop_ids]
        centre = bpos.mean(0)
        pts, frac = _polyline([centre] + list(path), n_rings, cap)
        d0, ea, eb = _frame(pts[0] - centre)
        ang = np.arctan2((bpos - centre) @ eb, (bpos - centre) @ ea)
        dirn = np.sign(np.sum(np.sin(np.diff(np.unwrap(ang)))))  # winding of the boundary around the limb axis
        P = len(loop_ids)
        phi = ang[0] + dirn * 2 * np.pi * np.arange(P) / P
        ring_dirs = np.cos(phi)[:, None] * ea + np.sin(phi)[:, None] * eb
        rad = np.interp(frac, np.linspace(0, 1, len(radii)), radii)
        prev = loop_ids
        tang = np.gradient(pts, axis=0)
        for t in range(n_rings):
            dt = tang[t] / np.linalg.norm(tang[t])
            ids = np.arange(len(verts), len(verts) + P)
            verts += list(pts[t] + rad[t] * _rotate_to(ring_dirs, d0, dt))
            hold = np.clip((t - 3) / 5, 0, 1)  # rings beyond the junction keep their place along the limb
            axes += [dt * hold] * P
            for k in range(P):
                k1 = (k + 1) % P
                faces += [(prev[k], prev[k1], ids[k1]), (prev[k], ids[k1], ids[k])]
            prev = ids
        tip = len(verts)
        verts.append(pts[-1])
        axes.append(np.full(3, np.nan))  # tip: pinned
        faces += [(prev[k], prev[(k + 1) % P], tip) for k in range(P)]
    V, F = np.array(verts, np.float64), np.array(faces, np.int64)
    assert V.shape[0] == NUM_VERTS and F.shape[0] == NUM_FACES, (V.shape, F.shape)
    return V, _orient(F, V), np.array(axes)


def _orient(F, V):
    """The construction is consistently oriented (each directed edge used once); flip all faces to point outward."""
    de = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    assert len(np.unique(de, axis=0)) == len(de), "inconsistent face orientation"
    return np.ascontiguousarray(F[:, ::-1] if _signed_volume(V, F) < 0 else F)


def _signed_volume(V, F):
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def neighbour_mean(V, F):
    n = len(V)
    rows = np.concatenate([F[:, 0], F[:, 1], F[:, 2], F[:, 1], F[:, 2], F[:, 0]])
    cols = np.concatenate([F[:, 1], F[:, 2], F[:, 0], F[:, 0], F[:, 1], F[:, 2]])
    import scipy.sparse as sp

    A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1.0  # every edge counts once
    deg = np.asarray(A.sum(1)).ravel()
    return lambda X: (A @ X) / deg[:, None]


def _relax(V, F, axes, prims, iters=30):
    """Alternate projection onto the body with tangential Laplacian smoothing. Limb vertices are held at their
    place along the limb (uniform smoothing would otherwise slide whole tubes towards the torso)."""
    mean = neighbour_mean(V, F)
    pinned = np.isnan(axes[:, 0])
    axes = np.nan_to_num(axes)
    for _ in range(iters):
        f, g = _sdf_grad(V, prims)
        V = V - (f / np.maximum((g * g).sum(1), 1e-6))[:, None] * g  # onto the body surface ...
        n = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)
        step = mean(V) - V
        step -= (step * n).sum(1, keepdims=True) * n  # ... then spread vertices tangentially
        step -= (step * axes).sum(1, keepdims=True) * axes
        step[pinned] = 0.0
        V = V + 0.6 * step
    return _project(V, prims, steps=3)


def vertex_normals(V, F):
    fn = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    vn = np.zeros_like(V)
    for c in range(3):
        np.add.at(vn, F[:, c], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def smooth_normals(V, F, iters=40):
    """Vertex normals diffused over the mesh: a smooth outward field even at the pointed hand/foot tips."""
    n, mean = vertex_normals(V, F), neighbour_mean(V, F)
    for _ in range(iters):
        n = 0.5 * n + 0.5 * mean(n)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

