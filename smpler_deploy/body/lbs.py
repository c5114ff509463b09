"""SMPL kinematics and linear blend skinning as pure functions (after smplx's `lbs`), written for export.

One implementation for every path: the full mesh (final stage), the joints-only refinement (intermediate
stages), the official-style baseline and the dataset evaluation (GT meshes). The kinematic tree is the constant
`SMPL_PARENTS` tuple, so the chain unrolls to plain matmuls (no data-dependent indexing, no in-place writes,
no einsum).
"""

from __future__ import annotations

import torch

from .data import SMPL_PARENTS


def shape_joints(betas: torch.Tensor, j_template: torch.Tensor, j_shapedirs: torch.Tensor) -> torch.Tensor:
    """Rest joints from shape alone: J = J_regressor (v_template + shapedirs b) = J_template + J_shapedirs b.

    betas [B,10], j_template [24,3], j_shapedirs [24*3,10] -> [B,24,3].
    """
    return j_template + torch.matmul(betas, j_shapedirs.t()).reshape(betas.shape[0], -1, 3)


def rigid_chain(rotmat: torch.Tensor, joints: torch.Tensor):
    """Forward kinematics. rotmat [B,24,3,3] (local), joints [B,24,3] (rest) -> world (R [B,24,3,3], t [B,24,3]).

    G_k = G_parent(k) [R_k | J_k - J_parent(k)]; t_k (the posed joint) is the chain's translation.
    """
    rots, trans = [], []
    for k, p in enumerate(SMPL_PARENTS):
        r_k = rotmat[:, k]
        if p < 0:
            rots.append(r_k)
            trans.append(joints[:, k])
        else:
            rel = (joints[:, k] - joints[:, p]).unsqueeze(-1)
            rots.append(torch.matmul(rots[p], r_k))
            trans.append(torch.matmul(rots[p], rel).squeeze(-1) + trans[p])
    return torch.stack(rots, 1), torch.stack(trans, 1)


def posed_joints(rotmat, betas, j_template, j_shapedirs) -> torch.Tensor:
    """Joints-only SMPL: the 24 posed skeleton joints without touching the 6890-vertex mesh."""
    return rigid_chain(rotmat, shape_joints(betas, j_template, j_shapedirs))[1]


def lbs(rotmat, betas, v_template, shapedirs, posedirs, lbs_weights, j_template, j_shapedirs):
    """Full SMPL (rotation-matrix input, as smplx with pose2rot=False).

    rotmat [B,24,3,3], betas [B,10]; v_template [V,3], shapedirs [V*3,10], posedirs [207,V*3],
    lbs_weights [V,24] -> (vertices [B,V,3], posed joints [B,24,3]).
    """
    b = betas.shape[0]
    v_shaped = v_template + torch.matmul(betas, shapedirs.t()).reshape(b, -1, 3)
    j_rest = shape_joints(betas, j_template, j_shapedirs)
    eye = torch.eye(3, dtype=rotmat.dtype, device=rotmat.device)
    pose_feature = (rotmat[:, 1:] - eye).reshape(b, -1)
    v_posed = v_shaped + torch.matmul(pose_feature, posedirs).reshape(b, -1, 3)
    r_world, t_world = rigid_chain(rotmat, j_rest)
    # Relative transforms A_k = [R_k | t_k - R_k J_k], blended per vertex.
    t_rel = t_world - torch.matmul(r_world, j_rest.unsqueeze(-1)).squeeze(-1)
    a = torch.cat([r_world, t_rel.unsqueeze(-1)], dim=-1).reshape(b, -1, 12)  # [B,24,12]
    t = torch.matmul(lbs_weights, a).reshape(b, -1, 3, 4)  # [B,V,3,4]
    verts = (t[..., :3] * v_posed.unsqueeze(-2)).sum(-1) + t[..., 3]
    return verts, t_world


def weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """x2d = s (X + tx), y2d = s (Y + ty): normalized crop coords. points [B,N,3], cam [B,3] -> [B,N,2]."""
    return cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """[...,6] -> [...,3,3]; the 6-vector is a row-major 3x2 matrix (columns a1, a2), Gram-Schmidt, b3 = b1 x b2.

    The cross product is written out: torch.cross without `dim` breaks export and TensorRT has no cross op.
    """
    shape = x.shape[:-1]
    m = x.reshape(-1, 3, 2)
    a1, a2 = m[..., 0], m[..., 1]
    b1 = torch.nn.functional.normalize(a1, dim=-1, eps=1e-12)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-12)
    b3 = torch.stack([
        b1[:, 1] * b2[:, 2] - b1[:, 2] * b2[:, 1],
        b1[:, 2] * b2[:, 0] - b1[:, 0] * b2[:, 2],
        b1[:, 0] * b2[:, 1] - b1[:, 1] * b2[:, 0],
    ], dim=-1)
    return torch.stack([b1, b2, b3], dim=-1).reshape(*shape, 3, 3)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: [...,3] -> [...,3,3] (GT SMPL poses in datasets are axis-angle)."""
    angle = aa.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    axis = aa / angle
    c, s = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + s * k + (1 - c) * torch.matmul(k, k)
