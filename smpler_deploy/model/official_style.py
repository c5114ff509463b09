"""The official SMPLer forward's computation, laid out the way the official code lays it out: the baseline.

`SMPLer(official_style=True)` runs this on the module's own weights. It exists for users without the official
repository (smpler-bench's `torch-official` cell), so it must cost what the official forward costs, not more and
not less. Its outputs equal the reference's to float32 rounding (tests/test_model.py). Read against the official
`models/` (smpler.py, transformer_basics.py, SMPL_handler.py with smplx 0.1.28's `lbs`):

- feature maps stay NCHW; the channel LayerNorm is the explicit mean / variance formula over dim 1;
- the joint features, the local windows (nearest) and the relative-position bias (bilinear) are read with
  `grid_sample` (align_corners=True), the window grid built from the joints as normalized coordinates;
- every attention projects its keys and values (`TransformerLayer.standard`): a global layer is one
  [B,NH,26,32] @ [B,NH,32,HW] product per scale, a local layer one batch row per joint
  ([B*24,NH,1,32] @ [B*24,NH,32,64]), the self-attention [B,NH,26,32] @ [B,NH,32,26];
- the pooled positional tables are pooled again every forward; the local rows are written in place;
- the full SMPL mesh at every stage (four times), as smplx computes it: shape blend by einsum, joints regressed
  from the 6890 shaped vertices, 4x4 homogeneous transforms for the chain and the skinning, the extra vertex
  joints gathered, the H36M regressor over all vertices, pelvis-relative copies.
Ours differs where no cost hides: eval-mode dropouts are skipped, rot6d is our function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..body.data import SMPL_PARENTS
from ..body.layer import H36M_J17_TO_J14
from ..body.lbs import rot6d_to_rotmat, weak_perspective
from ..outputs import SMPLOutput
from .transformer import LN_EPS, NUM_JOINTS, NUM_TOKENS, RADIUS

PELVIS = 0  # H36M-17 joint order: Pelvis first


# --- SMPL (smplx's layout) ------------------------------------------------------------------------------------

def _homogeneous(rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[N,3,3] rotations and [N,3] translations -> [N,4,4] rigid transforms (bottom row 0 0 0 1)."""
    return torch.cat([F.pad(rot, (0, 0, 0, 1)), F.pad(t.unsqueeze(-1), (0, 0, 0, 1), value=1.0)], dim=-1)


def smpl_mesh(handler, rot: torch.Tensor, betas: torch.Tensor, cam: torch.Tensor) -> dict:
    """One full SMPL evaluation with the official handler's outputs (vertices, H36M-14 joints, the 24 skeleton
    joints, their projections, pelvis-relative copies)."""
    s = handler.smpl
    b = betas.shape[0]
    v_shaped = s.v_template + torch.einsum("bl,mkl->bmk", betas, s.shapedirs)
    j_rest = torch.einsum("bik,ji->bjk", v_shaped, s.J_regressor)
    pose = torch.cat([rot[:, :1], rot[:, 1:]], dim=1)  # global orient + body pose, as smplx joins them
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    v_posed = v_shaped + torch.matmul((pose[:, 1:] - eye).reshape(b, -1), s.posedirs).reshape(b, -1, 3)
    rel = torch.cat([j_rest[:, :1], j_rest[:, 1:] - j_rest[:, s.parents[1:]]], dim=1)  # the buffer's tree
    local = _homogeneous(pose.reshape(-1, 3, 3), rel.reshape(-1, 3)).reshape(b, -1, 4, 4)
    chain = [local[:, 0]]
    for k in range(1, len(SMPL_PARENTS)):  # the same tree (body models are checked against it), as Python ints
        chain.append(torch.matmul(chain[SMPL_PARENTS[k]], local[:, k]))
    world = torch.stack(chain, dim=1)  # [B,24,4,4]
    posed_joints = world[:, :, :3, 3]
    rest_h = F.pad(j_rest, (0, 1)).unsqueeze(-1)  # [B,24,4,1], w = 0
    relative = world - F.pad(torch.matmul(world, rest_h), (3, 0))
    blend = torch.matmul(s.lbs_weights.unsqueeze(0).expand(b, -1, -1), relative.reshape(b, -1, 16))
    v_h = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=2).unsqueeze(-1)  # [B,V,4,1]
    verts = torch.matmul(blend.reshape(b, -1, 4, 4), v_h)[:, :, :3, 0]
    joints_all = torch.cat([posed_joints, torch.index_select(verts, 1, s.vertex_joint_selector.extra_joints_idxs)], 1)
    smpl_joints = joints_all[:, :NUM_JOINTS]
    j17 = torch.einsum("bik,ji->bjk", verts, handler.J_regressor_h36m_correct)
    pelvis = j17[:, PELVIS]
    j14 = j17[:, list(H36M_J17_TO_J14)]
    return {"vertices": verts, "joints": j14, "smpl_joints": smpl_joints,
            "vertices_minus_pelvis": verts - pelvis[:, None], "joints_minus_pelvis": j14 - pelvis[:, None],
            "joints2d": weak_perspective(j14, cam), "smpl_joints2d": weak_perspective(smpl_joints, cam)}


# --- the refinement block (NCHW maps, grid_sample, projected keys) -------------------------------------------

def channel_layer_norm(ln, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map, by its formula (the official LayerNormChannel)."""
    u = x.mean(1, keepdim=True)
    var = (x - u).pow(2).mean(1, keepdim=True)
    return ln.weight[:, None, None] * ((x - u) / torch.sqrt(var + LN_EPS)) + ln.bias[:, None, None]


def sample_windows(feat: torch.Tensor, joints2d: torch.Tensor, radius: int = RADIUS):
    """The (2r)^2 window of every joint read by nearest grid_sample: feat [B,C,H,W], joints2d [B,J,2] ->
    (keys [B,C,J,(2r)^2], grid [B,J,(2r)^2,2] in normalized coordinates)."""
    b, _, h, w = feat.shape
    steps = torch.arange(-(radius - 1), radius + 1, device=feat.device, dtype=joints2d.dtype)

    def axis(coord, size):  # [B,J] normalized -> [B,J,2r] normalized window positions, clamped to the map
        pix = torch.floor((coord + 1) * 0.5 * (size - 1)).unsqueeze(-1) + steps
        return (pix / (size - 1)).clamp(0, 1) * 2 - 1

    gx = axis(joints2d[..., 0], w).unsqueeze(-1).expand(-1, -1, -1, 2 * radius)  # x along the first window axis
    gy = axis(joints2d[..., 1], h).unsqueeze(-2).expand(-1, -1, 2 * radius, -1)
    grid = torch.stack([gx, gy], dim=-1).reshape(b, joints2d.shape[1], -1, 2)
    return F.grid_sample(feat, grid, mode="nearest", align_corners=True), grid


def _local(unit, x_joints, windows, grid, joints2d, size, radius: int = RADIUS):
    """Joint-aware local attention: each joint its own batch row of one query against its window's 64 keys."""
    b, c, jn, n = windows.shape
    dist = (grid - joints2d.unsqueeze(2)) / 2 * (size - 1) / radius  # pixels / r: the table's [-1,1] grid
    table = unit.relative_position_encoding_table[0]
    bias = F.grid_sample(table.expand(b, -1, -1, -1), dist, mode="bilinear", align_corners=True)  # [B,NH,J,N]
    bias = bias.permute(0, 2, 1, 3).reshape(b * jn, -1, 1, n)
    keys = windows.permute(0, 2, 3, 1).reshape(b * jn, n, c)
    layer = unit.trans_layer_list[0].transformer_layer
    return layer.standard(x_joints.reshape(b * jn, 1, c), keys, bias).view(b, jn, c)


def _trans_block(tb, q, proj, windows, grid, joints2d):
    b = q.shape[0]
    ids = torch.arange(NUM_TOKENS, device=q.device).unsqueeze(0).expand(b, -1)
    x = tb.dropout(tb.position_embeddings(ids) + tb.early_embedding(q))
    keys, pos = [], tb.feat_position_embedding
    for s, p in enumerate(proj):
        pos = pos if s == 0 else F.avg_pool2d(pos, 2, 2)
        keys.append((p + pos).flatten(2).transpose(1, 2))  # [B,HW,C] (a strided view, as the official reads it)
    for unit in tb.trans_units:
        x = unit_forward(unit, x, keys, windows, grid, joints2d, proj[0].shape[-1])
    return tb.head(x) + tb.residual(q)


def unit_forward(unit, x, keys, windows, grid, joints2d, size: int):
    """One TransformerUnit: global (4 scales, mean), local (joint rows), then self-attention over all 26 tokens.
    size: the scale-0 map's width (the window offsets are in its pixels)."""
    layers = [w.transformer_layer for w in unit.global_unit.trans_layer_list]
    xg = torch.stack([layer.standard(x, k) for layer, k in zip(layers, keys)], dim=-1).mean(-1)
    xl = _local(unit.local_unit, x[:, :NUM_JOINTS], windows, grid, joints2d, size)
    xg[:, :NUM_JOINTS] = 0.5 * (xg[:, :NUM_JOINTS] + xl)  # the official in-place row write
    return unit.self_trans_layer.self_trans_layer.standard(xg)


def block_forward(blk, q: torch.Tensor, feats: list[torch.Tensor], joints2d: torch.Tensor):
    """One TransformerBlockWrapped, official layout. feats: the backbone's NCHW maps. -> (d_rot, d_betas, d_cam, q)."""
    proj = []
    for s, f in enumerate(feats):
        conv, ln = blk.raw_feat_projection_layer[str(s)]
        proj.append(channel_layer_norm(ln, conv(f)))
    p0 = proj[0]
    joint_feat = F.grid_sample(p0, joints2d.unsqueeze(2), mode="bilinear", align_corners=True).squeeze(-1)  # [B,C,J]
    windows, grid = sample_windows(p0, joints2d)
    e = blk.joint_feat_projection_layer["0"](joint_feat.transpose(1, 2))
    q2 = torch.cat([q[:, :NUM_JOINTS] + e, q[:, NUM_JOINTS:] + e.mean(1, keepdim=True)], dim=1)
    out = _trans_block(blk.trans_block, q2, proj, windows, grid, joints2d)
    d_rot = rot6d_to_rotmat(blk.theta_predictor(out[:, :NUM_JOINTS]))
    return d_rot, blk.beta_predictor(out[:, NUM_JOINTS]), blk.cam_predictor(out[:, NUM_JOINTS + 1]), out


def forward(model, images: torch.Tensor) -> SMPLOutput:
    """The official SMPLer forward (every stage's full mesh; the last one returned) on `model`'s weights."""
    feats = model.backbone(images)
    g = feats[-1].flatten(2).mean(2)
    rot, betas, cam = model.SMPL_predictor(g)
    handler = model.smpl_handler
    smpl = smpl_mesh(handler, rot, betas, cam)
    b = images.shape[0]
    q = torch.cat([model.init_query_layer_theta(rot.flatten(2)), model.init_query_layer_beta(betas).unsqueeze(1),
                   model.init_query_layer_cam(cam).unsqueeze(1)], dim=1) + model.global_feat_projection(g).unsqueeze(1)
    for blk in model.transformer:
        d_rot, d_betas, d_cam, q = block_forward(blk, q, feats, smpl["smpl_joints2d"])
        betas = betas + d_betas
        cam = cam + d_cam
        rot = torch.matmul(rot, d_rot)
        smpl = smpl_mesh(handler, rot, betas, cam)
    return SMPLOutput(smpl["vertices"], smpl["joints"], smpl["smpl_joints"], smpl["smpl_joints2d"], rot, betas, cam)
