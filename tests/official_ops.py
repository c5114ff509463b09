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
