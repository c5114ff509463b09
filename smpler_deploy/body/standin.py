"""A synthetic body model with SMPL's exact array shapes and file layout (the SMPL model itself is licensed).

Construction: the surface (`standin_mesh.body_mesh`: SMPL's 6890 vertices and 13776 faces on a smooth implicit
body around SMPL's mean rest joints); here the skinning weights, joint regressors and blend shapes are derived
from that geometry. Everything is deterministic; the seed only varies the synthetic pose-corrective pattern.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .data import NUM_JOINTS, NUM_VERTS, SHAPES, SMPL_PARENTS, BodyModelData
from .loaders import posedirs_to_pkl, posedirs_to_smplx
from .standin_mesh import REST_JOINTS, body_mesh, neighbour_mean, smooth_normals


# ----------------------------------------------------------------------------------------------------------------
# Derived arrays
# ----------------------------------------------------------------------------------------------------------------

def _bone_segments():
    """Per joint: the segment its skinning weight covers (joint -> child / end effector)."""
    J = REST_JOINTS
    ends = {10: [0.125, -1.175, 0.16], 11: [-0.125, -1.175, 0.16], 15: [0.005, 0.50, 0.02],
            22: [0.87, 0.214, -0.05], 23: [-0.87, 0.214, -0.05]}
    child = {0: 3, 1: 4, 2: 5, 3: 6, 4: 7, 5: 8, 6: 9, 7: 10, 8: 11, 9: 12, 12: 15, 13: 16, 14: 17, 16: 18,
             17: 19, 18: 20, 19: 21, 20: 22, 21: 23}
    a = J.copy()
    b = np.array([J[child[j]] if j in child else ends[j] for j in range(NUM_JOINTS)], float)
    return a, b


def _segment_dist(P, a, b):
    ab = b - a
    t = np.clip(np.einsum("vjc,jc->vj", P[:, None] - a[None], ab) / np.einsum("jc,jc->j", ab, ab), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(P[:, None] - closest, axis=2), closest


def _skin_weights(V, F, smooth_iters=12):
    """Nearest-bone weights, then diffused over the mesh (not through space, so legs and arms stay separate) to
    get SMPL-like smooth transitions across joints."""
    d, _ = _segment_dist(V, *_bone_segments())
    w = np.exp(-(d - d.min(1, keepdims=True)) / 0.015)
    w /= w.sum(1, keepdims=True)
    mean = neighbour_mean(V, F)
    for _ in range(smooth_iters):
        w = 0.5 * w + 0.5 * mean(w)
    w[w < 2e-3] = 0.0  # sparse like SMPL: a handful of joints per vertex
    return w / w.sum(1, keepdims=True)


def _convex_regressor(V, targets, mu=1e-6):
    """Rows of non-negative weights summing to 1 over vertices near each target point, reproducing it (< 0.1 mm).
    A small ridge term spreads the weight over many vertices, like SMPL's regressor, instead of NNLS's 4."""
    from scipy.optimize import nnls

    R = np.zeros((len(targets), len(V)))
    for r, p in enumerate(targets):
        order = np.argsort(np.linalg.norm(V - p, axis=1))
        for k in (48, 96, 192, 384, 768):  # grow the neighbourhood until it surrounds the point
            idx = order[:k]
            A = np.vstack([V[idx].T, np.ones(k), np.sqrt(mu) * np.eye(k)])
            w, _ = nnls(A, np.concatenate([p, [1.0], np.zeros(k)]))
            w /= w.sum()
            if np.linalg.norm(V[idx].T @ w - p) < 1e-4:
                break
        R[r, idx] = w
    return R


def _h36m_targets():
    J = REST_JOINTS
    return np.array([
        (J[1] + J[2]) / 2 + [0, -0.01, 0], J[2] + [-0.01, -0.01, 0], J[5], J[8], J[1] + [0.01, -0.01, 0], J[4], J[7],
        (J[3] + J[6]) / 2, (J[9] + J[12]) / 2 + [0, 0.04, 0], [0.0, 0.40, 0.10], [0.0, 0.52, 0.02],
        J[16], J[18], J[20], J[17], J[19], J[21],
    ])


def _shape_basis(V, F, W):
    """10 smooth synthetic directions in metres per unit beta (cf. SMPL: height, girth, proportions)."""
    n = smooth_normals(V, F)
    pelvis = REST_JOINTS[0]
    x, y, z = V.T
    bump = lambda c, s: np.exp(-np.sum((V - c) ** 2, 1) / (2 * s * s))[:, None]  # noqa: E731
    legs = W[:, [1, 2, 4, 5, 7, 8, 10, 11]].sum(1)[:, None]
    arms = W[:, 16:24].sum(1)[:, None]
    upper = np.clip((y - 0.0) / 0.25, 0, 1)[:, None]
    dirs = [
        0.035 * (V - pelvis) * [0.3, 1.0, 0.3],  # overall height
        0.02 * n * (1.0 - 0.5 * arms),  # girth / weight
        0.03 * np.stack([0 * y, np.clip(y - pelvis[1], -1, 0), 0 * y], 1),  # leg length
        0.12 * np.stack([np.clip(x, -0.17, 0.17), 0 * y, 0 * z], 1) * upper,  # shoulder width (arms move along)
        0.02 * bump([0, 0.0, 0.12], 0.12) * [0, 0, 1],  # belly
        0.15 * np.stack([x, 0 * y, 0 * z], 1) * bump([0, -0.25, 0], 0.15),  # hip width
        0.04 * np.stack([np.sign(x) * np.clip(np.abs(x) - 0.17, 0, None), 0 * y, 0 * z], 1) * arms,  # arm length
        0.015 * n * legs,  # thigh / calf mass
        0.15 * (V - [0, 0.44, 0.02]) * bump([0, 0.44, 0.02], 0.1),  # head size
        0.02 * bump([0, 0.12, 0.1], 0.1) * [0, 0, 1],  # chest depth
    ]
    return np.stack(dirs, -1)  # [6890,3,10]


def _pose_basis(V, F, W, seed):
    """Small smooth correctives [6890,3,207] (pkl layout): each joint's 9 entries push the skin near that
    joint along the normal / bone, a few millimetres per unit of (R - I)."""
    rng = np.random.default_rng(seed)
    n = smooth_normals(V, F)
    parents = np.array(SMPL_PARENTS)
    out = np.zeros((len(V), 3, 207))
    for j in range(1, NUM_JOINTS):
        region = (W[:, j] + W[:, parents[j]])[:, None]
        coef = rng.uniform(-1, 1, size=(9, 2))
        bone = REST_JOINTS[j] - REST_JOINTS[parents[j]]
        bone = bone / np.linalg.norm(bone)
        for e in range(9):
            out[:, :, 9 * (j - 1) + e] = 0.004 * region * (coef[e, 0] * n + coef[e, 1] * 0.5 * bone)
    return out


_ARRAYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces", "parents",
           "J_regressor_h36m")


def make_standin_body_model(seed: int = 0) -> BodyModelData:
    """Deterministic synthetic SMPL-shaped body model (labelled `standin=True`). Generating it takes seconds, so it
    is kept in the on-disk cache (`smpler_deploy.cache`), keyed by the seed and the code and libraries it comes from."""
    from .. import __version__, cache

    here = Path(__file__).parent
    key = {"what": "standin-body", "seed": int(seed), "version": __version__,
           "source": cache.source_digest(*(here / n for n in ("standin.py", "standin_mesh.py", "data.py",
                                                              "loaders.py"))),
           **cache.build_environment("numpy", "scipy")}
    expected = {n: (s, "int64" if n in ("faces", "parents") else "float32") for n, s in SHAPES.items()}
    expected["J_regressor_h36m"] = ((17, NUM_VERTS), "float32")

    def build():
        d = _generate(seed)
        return {n: getattr(d, n) for n in _ARRAYS}

    arrays = cache.cached_arrays(cache.Entry(f"standin-body-seed{seed}", "stand-in body model", key), build,
                                 lambda a: cache.spec_mismatch(expected, a))
    return BodyModelData(**arrays, standin=True, source=_source(seed)).validate(where="stand-in body model")


def _source(seed: int) -> str:
    return f"stand-in (generated, seed {seed})"


def _generate(seed: int) -> BodyModelData:
    V, F = body_mesh()
    W = _skin_weights(V, F)
    J_reg = _convex_regressor(V, REST_JOINTS)
    h36m = _convex_regressor(V, _h36m_targets())
    data = BodyModelData(
        v_template=V.astype(np.float32),
        shapedirs=_shape_basis(V, F, W).astype(np.float32),
        posedirs=posedirs_to_smplx(_pose_basis(V, F, W, seed)).astype(np.float32),
        J_regressor=J_reg.astype(np.float32),
        lbs_weights=W.astype(np.float32),
        faces=F.astype(np.int64),
        parents=np.array(SMPL_PARENTS, np.int64),
        J_regressor_h36m=h36m.astype(np.float32),
        standin=True,
        source=_source(seed),
    )
    return data.validate(where="stand-in body model")


def write_standin_smpl_pkl(path, seed: int = 0) -> Path:
    """Write the stand-in in the distributed SMPL .pkl layout (dense arrays, scipy.sparse csc J_regressor)."""
    import scipy.sparse as sp

    d = make_standin_body_model(seed)
    kintree = np.stack([np.array(SMPL_PARENTS, np.int64), np.arange(NUM_JOINTS)]).astype(np.uint32)  # root -> 2**32-1
    model = {
        "v_template": d.v_template.astype(np.float64),
        "shapedirs": d.shapedirs.astype(np.float64),
        "posedirs": posedirs_to_pkl(d.posedirs).astype(np.float64),
        "J_regressor": sp.csc_matrix(d.J_regressor.astype(np.float64)),
        "weights": d.lbs_weights.astype(np.float64),
        "f": d.faces.astype(np.uint32),
        "kintree_table": kintree,
        "J": (d.J_regressor.astype(np.float64) @ d.v_template),
        "bs_type": "lrotmin",
        "bs_style": "lbs",
        "standin": True,  # not part of SMPL: marks the file as synthetic
        "source": d.source,
    }
    with atomic_path(path, suffix=".pkl") as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=2))  # protocol 2, like the distributed files
    return Path(path)
