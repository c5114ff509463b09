"""The SMPL body-model arrays, in the layout of smplx 0.1.28's buffers (what official checkpoints carry)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SmplerError

NUM_VERTS = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
NUM_FACES = 13776
# SMPL kinematic tree (kintree_table[0], root = -1). Constant, so the kinematic chain unrolls without
# data-dependent indexing (export hazard #3).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# smplx's vertex_joint_selector.extra_joints_idxs for SMPL (nose, eyes, ears, toes, heels, finger tips).
EXTRA_JOINTS_IDXS = (332, 6260, 2800, 4071, 583, 3216, 3226, 3387, 6617, 6624, 6787, 2746, 2319, 2445, 2556,
                     2673, 6191, 5782, 5905, 6016, 6133)

SHAPES = {
    "v_template": (NUM_VERTS, 3),
    "shapedirs": (NUM_VERTS, 3, NUM_BETAS),
    "posedirs": ((NUM_JOINTS - 1) * 9, NUM_VERTS * 3),
    "J_regressor": (NUM_JOINTS, NUM_VERTS),
    "lbs_weights": (NUM_VERTS, NUM_JOINTS),
    "faces": (NUM_FACES, 3),
    "parents": (NUM_JOINTS,),
}


@dataclass(frozen=True)
class BodyModelData:
    """All arrays float32 except faces/parents (int64). `standin` marks the project's synthetic model."""

    v_template: np.ndarray  # [6890,3]
    shapedirs: np.ndarray  # [6890,3,10]
    posedirs: np.ndarray  # [207,20670]  (smplx layout: pkl's [6890,3,207] reshaped to [20670,207], transposed)
    J_regressor: np.ndarray  # [24,6890] dense
    lbs_weights: np.ndarray  # [6890,24]
    faces: np.ndarray  # [13776,3] int64
    parents: np.ndarray  # [24] int64, parents[0] = -1
    J_regressor_h36m: np.ndarray | None = None  # [17,6890] or None
    standin: bool = False
    source: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self, where: str = "body model") -> "BodyModelData":
        for name, shape in SHAPES.items():
            arr = getattr(self, name)
            if tuple(arr.shape) != shape:
                raise SmplerError(f"{where}: {name} has shape {list(arr.shape)}, expected {list(shape)}")
        if tuple(int(p) for p in self.parents) != SMPL_PARENTS:
            raise SmplerError(f"{where}: kinematic tree (parents) differs from SMPL's 24-joint tree")
        if self.J_regressor_h36m is not None and (
            self.J_regressor_h36m.ndim != 2 or self.J_regressor_h36m.shape[0] < 17
            or self.J_regressor_h36m.shape[1] != NUM_VERTS
        ):
            raise SmplerError(
                f"{where}: H36M regressor has shape {list(self.J_regressor_h36m.shape)}, expected [17,{NUM_VERTS}]"
            )
        if self.faces.min() < 0 or self.faces.max() >= NUM_VERTS:
            raise SmplerError(f"{where}: faces index outside 0..{NUM_VERTS - 1}")
        return self

    @property
    def label(self) -> str:
        return "stand-in body model (synthetic, not SMPL)" if self.standin else f"SMPL body model ({self.source})"
