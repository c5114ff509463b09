"""The model's output structure, shared by every backend (torch tensors or numpy arrays)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import OptionError

# Order of the ONNX/engine outputs; the graph's output names are exactly these.
OUTPUT_NAMES = ("vertices", "joints", "smpl_joints", "smpl_joints2d", "rotmat", "betas", "cam")
INPUT_NAME = "images"
CROP_SIZE = 224


class SMPLOutput(NamedTuple):
    vertices: Any  # [B,6890,3] metres, camera-aligned body frame
    joints: Any  # [B,14,3] H36M-14 (official evaluation order)
    smpl_joints: Any  # [B,24,3] SMPL kinematic joints
    smpl_joints2d: Any  # [B,24,2] weak-perspective projection, normalized crop coords in [-1,1]
    rotmat: Any  # [B,24,3,3] per-joint rotations (local frames)
    betas: Any  # [B,10]
    cam: Any  # [B,3] weak-perspective camera (s, tx, ty)

    def numpy(self) -> "SMPLOutput":
        """Convert torch tensors to float32 numpy arrays (no-op for arrays)."""
        import numpy as np

        def conv(x):
            if hasattr(x, "detach"):
                x = x.detach().float().cpu().numpy()
            return np.asarray(x, dtype=np.float32)

        return SMPLOutput(*(conv(x) for x in self))


def parse_batch(spec) -> tuple[int, int, int]:
    """"1:4:8", (1, 4, 8), or a single N (= N:N:N) -> (min, opt, max), validated; errors echo what was given."""
    shown = spec if isinstance(spec, str) else ":".join(map(str, spec)) if isinstance(spec, (tuple, list)) else spec
    vals = spec
    if isinstance(spec, int):
        vals = (spec, spec, spec)
    elif isinstance(spec, str):
        parts = spec.split(":")
        try:
            vals = tuple(int(p) for p in (parts * 3 if len(parts) == 1 else parts))
        except ValueError:
            vals = ()
    vals = tuple(vals)
    if len(vals) != 3 or not all(isinstance(x, int) and x >= 1 for x in vals):
        raise OptionError("batch", shown, "expected MIN:OPT:MAX with positive integers, e.g. 1:1:8")
    if not vals[0] <= vals[1] <= vals[2]:
        raise OptionError("batch", shown, "need MIN <= OPT <= MAX")
    return vals
