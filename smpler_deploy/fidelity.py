"""Fidelity of a deployed model's outputs against the PyTorch fp32 reference, per output tensor.

One function (`fidelity`) is used by export and by the benchmarks, so a number printed at export time and the one
in a benchmark report mean the same thing:

* vertices, joints, smpl_joints: mean and max per-point Euclidean distance (mm), and the mean PA-aligned error (mm;
  similarity Procrustes per sample, `metrics.similarity_align`) — what is left once global scale/rotation agree;
* rotmat: mean and max geodesic angle (degrees) between reference and test rotations;
* betas, cam: max absolute difference (unitless);
* smpl_joints2d: max (and mean) absolute difference in 224-crop pixels (normalized coords × 112).

Non-finite test outputs make the affected statistics NaN (written to JSON as null) and set `finite: false`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import OptionError, SmplerError
from .fileio import write_text_atomic
from .metrics import M_TO_MM, similarity_align
from .outputs import CROP_SIZE, OUTPUT_NAMES, SMPLOutput

POINT_OUTPUTS = ("vertices", "joints", "smpl_joints")
NORM_TO_PX = CROP_SIZE / 2.0  # u = (x + 1) * 112


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def geodesic_deg(ra, rb) -> np.ndarray:
    """Angle of Raᵀ·Rb in degrees, elementwise over leading dims; atan2 form stays accurate near 0 and 180°."""
    m = np.swapaxes(_np(ra), -1, -2) @ _np(rb)
    cos = (np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0
    vee = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = np.linalg.norm(vee, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def _f(x) -> float:
    return float(x)


def _nanstat(fn, a) -> float:
    a = np.asarray(a, np.float64)
    return float("nan") if a.size == 0 or not np.isfinite(a).all() else _f(fn(a))


def fidelity(ref: SMPLOutput, test: SMPLOutput) -> dict:
    """Per-output deviation of `test` from `ref` (both SMPLOutput, torch or numpy). See the module docstring."""
    ref, test = SMPLOutput(*map(_np, ref)), SMPLOutput(*map(_np, test))
    for name, a, b in zip(OUTPUT_NAMES, ref, test):
        if a.shape != b.shape:
            raise SmplerError(f"fidelity: output {name} has shape {list(b.shape)}, reference {list(a.shape)}")
    out: dict = {"batch": int(ref.vertices.shape[0]), "finite": bool(all(np.isfinite(x).all() for x in test))}
    for name in POINT_OUTPUTS:
        a, b = getattr(ref, name), getattr(test, name)
        dist = np.linalg.norm(a - b, axis=-1) * M_TO_MM  # [B,N]
        pa = np.linalg.norm(similarity_align(b, a) - a, axis=-1).mean(axis=1) * M_TO_MM
        out[name] = {"mean_mm": _nanstat(np.mean, dist), "max_mm": _nanstat(np.max, dist),
                     "pa_mean_mm": _nanstat(np.mean, pa)}
    ang = geodesic_deg(ref.rotmat, test.rotmat)
    out["rotmat"] = {"mean_deg": _nanstat(np.mean, ang), "max_deg": _nanstat(np.max, ang)}
    for name in ("betas", "cam"):
        out[name] = {"max_abs": _nanstat(np.max, np.abs(getattr(ref, name) - getattr(test, name)))}
    px = np.abs(ref.smpl_joints2d - test.smpl_joints2d) * NORM_TO_PX
    out["smpl_joints2d"] = {"mean_px": _nanstat(np.mean, px), "max_px": _nanstat(np.max, px)}
    return out


# (output, key, column label) rows of the text table
_ROWS = [(n, k, f"{n} {lbl}") for n in POINT_OUTPUTS
         for k, lbl in (("mean_mm", "mean (mm)"), ("max_mm", "max (mm)"), ("pa_mean_mm", "PA mean (mm)"))]
_ROWS += [("rotmat", "mean_deg", "rotmat mean (deg)"), ("rotmat", "max_deg", "rotmat max (deg)"),
          ("betas", "max_abs", "betas max |Δ|"), ("cam", "max_abs", "cam max |Δ|"),
          ("smpl_joints2d", "mean_px", "smpl_joints2d mean (px)"), ("smpl_joints2d", "max_px", "smpl_joints2d max (px)")]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def format_fidelity_table(d: dict, title: str = "fidelity vs PyTorch fp32") -> str:
    """Aligned two-column text table of a `fidelity()` dict."""
    rows = [(label, _fmt(d.get(o, {}).get(k))) for o, k, label in _ROWS]
    w = max(len(r[0]) for r in rows)
    vw = max(len(r[1]) for r in rows)
    head = f"{title} (batch {d.get('batch', '?')}{'' if d.get('finite', True) else ', NON-FINITE outputs'})"
    return "\n".join([head, "-" * max(len(head), w + vw + 2)] + [f"{a:<{w}}  {b:>{vw}}" for a, b in rows])


def jsonable(obj):
    """NaN/inf -> None recursively, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_fidelity_json(d: dict, path) -> Path:
    return write_text_atomic(path, json.dumps(jsonable(d), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------- the fidelity gate (export's `max_error_mm`)

# Default (mean, max) vertex-error limits in mm for int8 graphs, ~2.5-3x what the default model measures on the 4
# held-out crops export checks (int8 trt 5.2 / 26; int8 cpu, 7-bit weights, ~6 / 35: see
# benchmarks/reports/int8_cpu_range). A graph over it is broken (saturating int8 kernels, a calibration set unlike
# the inputs), not merely quantized. fp32/fp16 have no default limit.
INT8_LIMITS_MM = (15.0, 75.0)
OFF = ("off", "none")


def parse_max_error(text: str, field: str = "max_error_mm") -> tuple[float, float] | None:
    """'MEAN,MAX' (mm) -> (mean, max); 'off' / 'none' -> None (no gate). Errors name the option `field`."""
    if text.strip().lower() in OFF:
        return None
    try:
        mean, mx = (float(v) for v in text.split(","))
    except ValueError:
        raise OptionError(field, text, "expected MEAN,MAX in mm (e.g. 15,75) or none") from None
    if not (math.isfinite(mean) and math.isfinite(mx) and 0 < mean <= mx):
        raise OptionError(field, text, "expected finite limits with 0 < MEAN <= MAX (mm)")
    return mean, mx


def gate_limits(text: str | None, precision) -> tuple[float, float] | None:
    """The limits that apply: the flag's (`text`), else the int8 default; fp32/fp16 have none unless given."""
    if text is None:
        return INT8_LIMITS_MM if str(getattr(precision, "kind", precision)).startswith("int8") else None  # int8-cpu too
    return parse_max_error(text)


def check_gate(fid: dict, limits: tuple[float, float] | None) -> str | None:
    """None when `fid` (a `fidelity()` dict) is within `limits` (vertex mean, max mm); else what was exceeded."""
    if limits is None:
        return None
    v = fid.get("vertices") or {}
    mean, mx = v.get("mean_mm"), v.get("max_mm")
    if not fid.get("finite", True) or mean is None or mx is None or not (math.isfinite(mean) and math.isfinite(mx)):
        return f"non-finite outputs (limit {limits[0]:g} / {limits[1]:g} mm)"
    if mean > limits[0] or mx > limits[1]:
        return f"vertex error mean {mean:.3g} / max {mx:.3g} mm exceeds the limit {limits[0]:g} / {limits[1]:g} mm"
    return None


LOW_CALIBRATION = 100


def calibration_warning(n_images: int, builtin: bool = False) -> str | None:
    """One-line warning when int8 calibration has fewer images than a reliable MinMax range needs."""
    if n_images >= LOW_CALIBRATION:
        return None
    what = f"the built-in set ({n_images} crops of sample photos, no people)" if builtin else f"{n_images} images"
    return (f"warning: int8 calibration on {what}; ranges from fewer than {LOW_CALIBRATION} images may not cover "
            f"your inputs: pass --calib DIR with a few hundred person crops (smpler-run --save-crops DIR writes them)")
