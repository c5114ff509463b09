"""The SMPL layer as an nn.Module whose buffers carry the official checkpoint's names.

`smpl_handler.smpl.*` follows smplx 0.1.28's SMPL buffers and `smpl_handler.J_regressor_h36m_correct` the
official SMPLHandler, so a checkpoint loads strictly. Derived constants (joint shape basis, H36M-14 rows) are
non-persistent buffers refreshed whenever the persistent ones change (`refresh`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import lbs as L
from .data import EXTRA_JOINTS_IDXS, NUM_BETAS, NUM_FACES, NUM_JOINTS, NUM_VERTS, BodyModelData

# H36M-17 -> the 14 evaluation joints (official constants.H36M_TO_J14 order).
H36M_J17_TO_J14 = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)


class _VertexJointSelector(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("extra_joints_idxs", torch.tensor(EXTRA_JOINTS_IDXS, dtype=torch.long))


class _SMPLBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        z = torch.zeros
        self.register_buffer("shapedirs", z(NUM_VERTS, 3, NUM_BETAS))
        self.register_buffer("faces_tensor", z(NUM_FACES, 3, dtype=torch.long))
        self.register_buffer("v_template", z(NUM_VERTS, 3))
        self.register_buffer("J_regressor", z(NUM_JOINTS, NUM_VERTS))
        self.register_buffer("posedirs", z((NUM_JOINTS - 1) * 9, NUM_VERTS * 3))
        self.register_buffer("parents", z(NUM_JOINTS, dtype=torch.long))
        self.register_buffer("lbs_weights", z(NUM_VERTS, NUM_JOINTS))
        self.vertex_joint_selector = _VertexJointSelector()


class SMPLHandler(nn.Module):
    def __init__(self):
        super().__init__()
        self.smpl = _SMPLBuffers()
        self.register_buffer("J_regressor_h36m_correct", torch.zeros(17, NUM_VERTS))
        for name, shape in (("j_template", (NUM_JOINTS, 3)), ("j_shapedirs", (NUM_JOINTS * 3, NUM_BETAS)),
                            ("shapedirs_flat", (NUM_VERTS * 3, NUM_BETAS)), ("h36m14", (14, NUM_VERTS))):
            self.register_buffer(name, torch.zeros(shape), persistent=False)
        self.body_standin = True
        self.body_source = "unset"

    def set_body_model(self, data: BodyModelData) -> None:
        s = self.smpl
        with torch.no_grad():
            s.shapedirs.copy_(torch.from_numpy(np.asarray(data.shapedirs, np.float32)))
            s.faces_tensor.copy_(torch.from_numpy(np.asarray(data.faces, np.int64)))
            s.v_template.copy_(torch.from_numpy(np.asarray(data.v_template, np.float32)))
            s.J_regressor.copy_(torch.from_numpy(np.asarray(data.J_regressor, np.float32)))
            s.posedirs.copy_(torch.from_numpy(np.asarray(data.posedirs, np.float32)))
            s.parents.copy_(torch.from_numpy(np.asarray(data.parents, np.int64)))
            s.lbs_weights.copy_(torch.from_numpy(np.asarray(data.lbs_weights, np.float32)))
        self.body_standin = bool(data.standin)
        self.body_source = data.source
        if data.J_regressor_h36m is not None:  # otherwise the current regressor (e.g. the checkpoint's) stays
            self.set_h36m_regressor(data.J_regressor_h36m)
        self.refresh()

    def set_h36m_regressor(self, regressor) -> None:
        """The 17-joint regressor behind `joints` (H36M's, or 3DPW's for that protocol); first 17 rows used."""
        with torch.no_grad():
            self.J_regressor_h36m_correct.copy_(torch.from_numpy(np.asarray(regressor[:17], np.float32)))
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the derived constants (float64 for the contraction, then float32)."""
        s = self.smpl
        jr = s.J_regressor.double()
        self.j_template.copy_((jr @ s.v_template.double()).float())
        jsd = torch.einsum("jv,vkl->jkl", jr, s.shapedirs.double())  # offline, never exported
        self.j_shapedirs.copy_(jsd.reshape(NUM_JOINTS * 3, NUM_BETAS).float())
        self.shapedirs_flat.copy_(s.shapedirs.reshape(NUM_VERTS * 3, NUM_BETAS))
        self.h36m14.copy_(self.J_regressor_h36m_correct[list(H36M_J17_TO_J14)])

    @property
    def faces(self) -> np.ndarray:
        return self.smpl.faces_tensor.cpu().numpy()

    def joints2d(self, rotmat, betas, cam):
        """Joints-only stage output: 24 posed skeleton joints projected to the crop."""
        joints = L.posed_joints(rotmat, betas, self.j_template, self.j_shapedirs)
        return L.weak_perspective(joints, cam)

    def forward(self, rotmat, betas, cam):
        """Full SMPL: (vertices [B,6890,3], H36M-14 joints [B,14,3], smpl_joints [B,24,3], smpl_joints2d)."""
        s = self.smpl
        verts, joints = L.lbs(rotmat, betas, s.v_template, self.shapedirs_flat, s.posedirs, s.lbs_weights,
                              self.j_template, self.j_shapedirs)
        h36m = torch.matmul(self.h36m14, verts)
        return verts, h36m, joints, L.weak_perspective(joints, cam)
