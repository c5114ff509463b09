"""Literal transcriptions of the official SMPLer sampling code (grid_sample based), used only as test oracles."""

import torch
import torch.nn.functional as F


def official_local_sampling(p0_nchw, joints2d, radius=4):
    """Returns (sampled [B,C,J,N], d [B,J,N,2]) as transformer_basics.py computes them."""
    b, c, h, w = p0_nchw.shape
    jn = joints2d.shape[1]
    px = (joints2d[..., 0] + 1) / 2 * (w - 1)
    py = (joints2d[..., 1] + 1) / 2 * (h - 1)
    o = torch.arange(-(radius - 1), radius + 1, dtype=torch.float32)
    sx = ((torch.floor(px).unsqueeze(-1) + o) / (w - 1)).clamp(0, 1) * 2 - 1  # [B,J,2r]
    sy = ((torch.floor(py).unsqueeze(-1) + o) / (h - 1)).clamp(0, 1) * 2 - 1
    gx = sx.unsqueeze(-1).expand(b, jn, 2 * radius, 2 * radius)
    gy = sy.unsqueeze(-2).expand(b, jn, 2 * radius, 2 * radius)
    grid = torch.stack([gx, gy], -1).reshape(b, jn, -1, 2)
    sampled = F.grid_sample(p0_nchw, grid, mode="nearest", align_corners=True, padding_mode="zeros")
    d = (grid - joints2d.unsqueeze(2)) / 2 * (w - 1) / radius
    return sampled, d


def official_local_attention(p0_nchw, joints2d, q_heads, wk, bk, wv, bv, table, radius=4):
    """Standard (unfolded) attention: q_heads [B,J,NH,dh], wk/wv [C,C], table [1,NH,T,T] -> ctx [B,J,C]."""
    b, c, h, w = p0_nchw.shape
    jn = joints2d.shape[1]
    nh, dh = q_heads.shape[2], q_heads.shape[3]
    sampled, d = official_local_sampling(p0_nchw, joints2d, radius)
    keys = sampled.permute(0, 2, 3, 1)  # [B,J,N,C]
    k = (keys @ wk.T + bk).reshape(b, jn, -1, nh, dh).permute(0, 1, 3, 2, 4)
    v = (keys @ wv.T + bv).reshape(b, jn, -1, nh, dh).permute(0, 1, 3, 2, 4)
    score = F.grid_sample(table.expand(b, -1, -1, -1), d, mode="bilinear", align_corners=True, padding_mode="zeros")
    score = score.permute(0, 2, 1, 3)  # [B,J,NH,N]
    logits = (q_heads.unsqueeze(-2) @ k.transpose(-1, -2)).squeeze(-2) / dh**0.5 + score
    p = logits.softmax(-1)
    ctx = (p.unsqueeze(-2) @ v).squeeze(-2)  # [B,J,NH,dh]
    return ctx.reshape(b, jn, c)


# --- A literal transcription of the official forward (smpler.py, transformer_basics.py, smplx lbs), operating on
# our module's parameters. Independent of our export-friendly rewrites: grid_sample sampling, textbook attention,
# in-place row writes, einsum SMPL with 4x4 transforms, torch.cross, per-forward AvgPool and arange.

H36M_J17_TO_J14 = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]


def _bert_ln(ln, x, eps=1e-12):
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return ln.weight * ((x - u) / torch.sqrt(s + eps)) + ln.bias


def _layer(layer, x, kv=None, bias=None):
    b, t, c = x.shape
    h = _bert_ln(layer.LayerNorm_attn, x)
    kv = h if kv is None else kv

    def heads(y):
        return y.view(y.shape[0], y.shape[1], 4, 32).permute(0, 2, 1, 3)

    q, k, v = heads(layer.attention.query(h)), heads(layer.attention.key(kv)), heads(layer.attention.value(kv))
    scores = q @ k.transpose(-1, -2) / 32**0.5
    if bias is not None:
        scores = scores + bias
    ctx = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(b, t, c)
    a = x + layer.linear_attn(ctx)
    mlp = layer.mlp
    return a + mlp[3](F.gelu(mlp[1](_bert_ln(mlp[0], a))))


def official_rot6d(x):
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = F.normalize(a1)
    b2 = F.normalize(a2 - torch.einsum("bi,bi->b", b1, a2).unsqueeze(-1) * b1)
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack((b1, b2, b3), dim=-1)


def official_smpl(handler, rot, betas, cam):
    s = handler.smpl
    bsz = betas.shape[0]
    v_shaped = s.v_template + torch.einsum("bl,mkl->bmk", betas, s.shapedirs)
    joints = torch.einsum("bik,ji->bjk", v_shaped, s.J_regressor)
    pose_feature = (rot[:, 1:] - torch.eye(3)).reshape(bsz, -1)
    v_posed = v_shaped + (pose_feature @ s.posedirs).view(bsz, -1, 3)
    parents = s.parents
    j = joints.unsqueeze(-1)
    rel = j.clone()
    rel[:, 1:] -= j[:, parents[1:]]
    tm = torch.cat([F.pad(rot.reshape(-1, 3, 3), [0, 0, 0, 1]),
                    torch.cat([rel.reshape(-1, 3, 1), torch.ones(bsz * 24, 1, 1)], dim=1)], dim=2).reshape(bsz, 24, 4, 4)
    chain = [tm[:, 0]]
    for i in range(1, 24):
        chain.append(chain[parents[i]] @ tm[:, i])
    transforms = torch.stack(chain, dim=1)
    posed = transforms[:, :, :3, 3]
    jh = F.pad(j, [0, 0, 0, 1])
    rel_t = transforms - F.pad(transforms @ jh, [3, 0, 0, 0, 0, 0, 0, 0])
    t = (s.lbs_weights.unsqueeze(0).expand(bsz, -1, -1) @ rel_t.view(bsz, 24, 16)).view(bsz, -1, 4, 4)
    vh = torch.cat([v_posed, torch.ones(bsz, v_posed.shape[1], 1)], dim=2)
    verts = (t @ vh.unsqueeze(-1))[:, :, :3, 0]
    j14 = torch.einsum("bik,ji->bjk", verts, handler.J_regressor_h36m_correct)[:, H36M_J17_TO_J14]

    def proj(x):
        return cam[:, 0].view(-1, 1, 1) * (x[:, :, :2] + cam.view(-1, 1, 3)[:, :, 1:])

    return {"vertices": verts, "joints": j14, "smpl_joints": posed, "smpl_joints2d": proj(posed)}


def official_block(blk, q, feats, j2d):
    proj = []
    for s, f in enumerate(feats):
        conv, lnc = blk.raw_feat_projection_layer[str(s)]
        x = conv(f)
        u = x.mean(1, keepdim=True)
        var = (x - u).pow(2).mean(1, keepdim=True)
        proj.append(lnc.weight[:, None, None] * ((x - u) / torch.sqrt(var + 1e-12)) + lnc.bias[:, None, None])
    p0 = proj[0]
    bsz = q.shape[0]
    jf = F.grid_sample(p0, j2d.unsqueeze(2), align_corners=True)[..., 0].permute(0, 2, 1)
    sampled, d = official_local_sampling(p0, j2d)
    e = blk.joint_feat_projection_layer["0"](jf)
    q2 = q.clone()
    q2[:, :24] = q2[:, :24] + e
    q2[:, 24:] = q2[:, 24:] + e.mean(1, keepdim=True)
    tb = blk.trans_block
    x = tb.early_embedding(q2) + tb.position_embeddings(torch.arange(26))
    pos = [tb.feat_position_embedding]
    for _ in range(3):
        pos.append(F.avg_pool2d(pos[-1], 2, 2))
    g = [(proj[s] + pos[s]).flatten(2).transpose(1, 2) for s in range(4)]
    keys = sampled.permute(0, 2, 3, 1).reshape(bsz * 24, -1, 128)
    for unit in tb.trans_units:
        outs = [_layer(w.transformer_layer, x, kv=g[s]) for s, w in enumerate(unit.global_unit.trans_layer_list)]
        xg = torch.stack(outs).mean(0)
        lu = unit.local_unit
        table = lu.relative_position_encoding_table[0]
        score = F.grid_sample(table.expand(bsz, -1, -1, -1), d, mode="bilinear", align_corners=True)
        score = score.permute(0, 2, 1, 3).reshape(bsz * 24, 4, 1, -1)
        xl = _layer(lu.trans_layer_list[0].transformer_layer, x[:, :24].reshape(bsz * 24, 1, 128), kv=keys,
                    bias=score).reshape(bsz, 24, 128)
        xg = xg.clone()
        xg[:, :-2] = (xg[:, :-2] + xl) / 2  # the official in-place write
        x = _layer(unit.self_trans_layer.self_trans_layer, xg)
    out = tb.head(x) + tb.residual(q2)
    d_rot = official_rot6d(blk.theta_predictor(out[:, :24]).reshape(-1, 6)).reshape(bsz, 24, 3, 3)
    return d_rot, blk.beta_predictor(out[:, 24]), blk.cam_predictor(out[:, 25]), out


def official_forward(model, images):
    """Final-stage output dict of the official SMPLer forward, using `model`'s weights."""
    feats = model.backbone(images)
    g = feats[3].mean(dim=(2, 3))
    p = model.SMPL_predictor
    bsz = images.shape[0]
    pose, shape, cam = p.init_pose.expand(bsz, -1), p.init_shape.expand(bsz, -1), p.init_cam.expand(bsz, -1)
    for _ in range(3):
        h = p.relu(p.fc2(p.relu(p.fc1(torch.cat([g, pose, shape, cam], 1)))))
        pose, shape, cam = pose + p.decpose(h), shape + p.decshape(h), cam + p.deccam(h)
    rot = official_rot6d(pose).reshape(bsz, 24, 3, 3)
    d = official_smpl(model.smpl_handler, rot, shape, cam)
    q = torch.cat([model.init_query_layer_theta(rot.reshape(bsz, 24, 9)), model.init_query_layer_beta(shape)[:, None],
                   model.init_query_layer_cam(cam)[:, None]], 1) + model.global_feat_projection(g)[:, None]
    for blk in model.transformer:
        d_rot, d_b, d_c, q = official_block(blk, q, feats, d["smpl_joints2d"])
        shape, cam, rot = shape + d_b, cam + d_c, rot @ d_rot
        d = official_smpl(model.smpl_handler, rot, shape, cam)
    d.update(rotmat=rot, betas=shape, cam=cam)
    return d
