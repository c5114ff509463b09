"""3D human-mesh metrics in millimetres, as the official SMPLer evaluation computes them.

Inputs are metres, outputs millimetres. Everything is vectorized over the batch (numpy, float64 inside).

* `mpjpe`: per-sample mean joint distance after re-centring both sets at the midpoint of H36M-14 joints 2 and 3
  (R_Hip, L_Hip) — `utils/eval_metrics.py` in the official code.
* `pa_mpjpe`: per-sample mean joint distance after a similarity Procrustes alignment of pred onto GT (scale,
  rotation with the reflection fix, translation); `similarity_align` is the one implementation, reused by
  `smpler_deploy.fidelity`.
* `pve` (alias MPVE): per-sample mean vertex distance, optionally after subtracting per-sample pelvis points.

Degenerate inputs (documented behaviour, no NaN from a division by zero):
* pred with zero variance (all points equal): no scale/rotation is defined, so scale = 0, R = I and the aligned
  prediction collapses onto the GT centroid; the PA error is then the GT's mean distance from its centroid.
* GT with zero variance: the cross-covariance is zero, so scale = 0 and the aligned prediction is the GT point;
  the PA error is 0.
* Non-finite inputs propagate as NaN in the affected samples only.
"""

from __future__ import annotations

import numpy as np

from .errors import SmplerError

H36M14_HIPS = (2, 3)  # R_Hip, L_Hip in the H36M-14 (J24_TO_J14) order
M_TO_MM = 1000.0
_EPS = 1e-12


def _as3(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise SmplerError(f"{name}: expected points [B,N,3], got shape {list(a.shape)}")
    return a


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as3(pred, "pred"), _as3(gt, "gt")
    if p.shape != g.shape:
        raise SmplerError(f"pred {list(p.shape)} and gt {list(g.shape)} differ in shape")
    return p, g


def hip_center(joints14) -> np.ndarray:
    """Midpoint of H36M-14 joints 2 and 3, [B,1,3] (the official MPJPE root)."""
    j = _as3(joints14, "joints")
    if j.shape[1] != 14:
        raise SmplerError(f"joints: expected the 14 H36M joints, got {j.shape[1]}")
    return j[:, list(H36M14_HIPS)].mean(axis=1, keepdims=True)


def similarity_align(pred, gt, return_transform: bool = False):
    """Align pred [B,N,3] onto gt [B,N,3] with the least-squares similarity transform (Umeyama / SPIN's
    `compute_similarity_transform`): gt ≈ s·R·pred + t. Returns the aligned pred (and (s [B], R [B,3,3], t [B,3])).
    """
    p, g = _pair(pred, gt)
    mu_p, mu_g = p.mean(axis=1, keepdims=True), g.mean(axis=1, keepdims=True)
    x, y = p - mu_p, g - mu_g
    var_p = np.sum(x * x, axis=(1, 2))  # [B]
    k = np.einsum("bni,bnj->bij", x, y)  # [B,3,3] cross-covariance (pred -> gt)
    finite = np.isfinite(k).all(axis=(1, 2))
    k_safe = np.where(finite[:, None, None], k, 0.0)  # SVD rejects NaN; restore NaN below
    u, _, vt = np.linalg.svd(k_safe)
    v = np.swapaxes(vt, 1, 2)
    # Reflection fix: flip the last singular direction when det(V Uᵀ) < 0 so R is a proper rotation.
    d = np.sign(np.linalg.det(v @ np.swapaxes(u, 1, 2)))
    d = np.where(d == 0, 1.0, d)
    z = np.broadcast_to(np.eye(3), k.shape).copy()
    z[:, 2, 2] = d
    r = v @ z @ np.swapaxes(u, 1, 2)
    degenerate = var_p < _EPS
    r[degenerate] = np.eye(3)
    s = np.einsum("bij,bji->b", r, k_safe) / np.where(degenerate, 1.0, var_p)
    s = np.where(degenerate, 0.0, s)
    t = mu_g[:, 0] - s[:, None] * np.einsum("bij,bj->bi", r, mu_p[:, 0])
    aligned = s[:, None, None] * np.einsum("bij,bnj->bni", r, p) + t[:, None, :]
    aligned[~finite] = np.nan
    return (aligned, (s, r, t)) if return_transform else aligned


def point_error(pred, gt) -> np.ndarray:
    """Per-sample mean Euclidean distance [B], in mm (inputs in metres)."""
    p, g = _pair(pred, gt)
    return np.linalg.norm(p - g, axis=-1).mean(axis=1) * M_TO_MM


def mpjpe(pred_joints14, gt_joints14) -> np.ndarray:
    """Per-sample MPJPE [B] in mm, both sets re-centred at their hip midpoint (official protocol)."""
    p, g = _pair(pred_joints14, gt_joints14)
    return point_error(p - hip_center(p), g - hip_center(g))


def pa_mpjpe(pred_joints, gt_joints) -> np.ndarray:
    """Per-sample PA-MPJPE [B] in mm (similarity Procrustes, pred onto GT). Centring does not matter here."""
    p, g = _pair(pred_joints, gt_joints)
    return point_error(similarity_align(p, g), g)


def pve(pred_vertices, gt_vertices, pred_pelvis=None, gt_pelvis=None) -> np.ndarray:
    """Per-sample mean per-vertex error [B] in mm (MPVE). Pelvis points [B,3] are subtracted when given
    (the official code subtracts the H36M-regressed pelvis from both meshes)."""
    p, g = _pair(pred_vertices, gt_vertices)
    if pred_pelvis is not None:
        p = p - np.asarray(pred_pelvis, np.float64).reshape(-1, 1, 3)
    if gt_pelvis is not None:
        g = g - np.asarray(gt_pelvis, np.float64).reshape(-1, 1, 3)
    return point_error(p, g)


mpve = pve


def summarize(per_sample: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over samples of each per-sample metric (NaN samples ignored), as plain floats."""
    return {k: float(np.nanmean(v)) if np.size(v) and np.isfinite(v).any() else float("nan")
            for k, v in per_sample.items()}
