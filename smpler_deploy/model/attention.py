"""SMPLer's two attention kinds as pure functions: the single definition every backend follows.

Both use the same exact rewrite of softmax attention (per head h, key vectors k_n = W_k x_n + b_k):

    q_h . k_n = (W_k,h^T q_h) . x_n + q_h . b_k,h      the second term is constant over n and cancels in softmax
    sum_n p_n v_n = W_v,h (sum_n p_n x_n) + b_v,h       because sum_n p_n = 1

so the key/value projections act on the query side (`qk`, 1 vector per query and head) and after the weighted
sum (`agg`), never on the keys. For the global unit that removes the 2*3136*128^2 MAC K/V projection of the
scale-0 map (the largest cost outside the backbone); for the local unit the 24*64 per-key projections.
The functions below take `qk` (already scaled by 1/sqrt(d_head)) and raw key features, and return `agg`,
the per-head softmax-weighted sum of the raw features. Triton kernels and TensorRT plugins implement exactly
these signatures (see `smpler_deploy.plugins`).

Everything is written for export: gathers instead of grid_sample, no in-place writes, no Range/If nodes.
"""

from __future__ import annotations

import torch

from ..plugins.abi import RADIUS  # noqa: F401  (sampling radius r: 2r x 2r window, (2r+1)^2 table)


def window_coords(joints2d: torch.Tensor, size: int, radius: int = RADIUS):
    """Integer window around each joint, as the official nearest grid_sample reads it.

    joints2d [B,J,2] in normalized [-1,1] coords (align_corners=True convention) -> (ix, iy, dx, dy), each
    [B,J,2r]: clamped integer pixel columns/rows (float-valued) and their offsets from the joint in pixels.
    Always computed in float32: a window that moves by one pixel changes the result.
    """
    j = joints2d.float()
    p = (j + 1.0) * 0.5 * (size - 1)  # [B,J,2] pixel coords
    # On the joints' device (CUDA, meta, ...); constant-folded in export.
    offsets = torch.arange(-(radius - 1), radius + 1, dtype=torch.float32, device=joints2d.device)
    base = torch.floor(p).unsqueeze(-1) + offsets  # [B,J,2,2r]
    idx = base.clamp(0, size - 1)
    delta = idx - p.unsqueeze(-1)
    return idx[:, :, 0], idx[:, :, 1], delta[:, :, 0], delta[:, :, 1]


def bilinear_table_lookup(table: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Bilinear read of table [NH,T,T] at fractional cells (tx: last axis, ty: first), zero outside.

    tx, ty [...]: returns [NH, ...]. Equals grid_sample(align_corners=True, padding_mode='zeros').
    """
    nh, t, _ = table.shape
    flat = table.reshape(nh, t * t)
    x0 = torch.floor(tx)
    y0 = torch.floor(ty)
    out = None
    for xi, wx in ((x0, 1.0 - (tx - x0)), (x0 + 1.0, tx - x0)):
        for yi, wy in ((y0, 1.0 - (ty - y0)), (y0 + 1.0, ty - y0)):
            valid = (xi >= 0) & (xi <= t - 1) & (yi >= 0) & (yi <= t - 1)
            idx = (yi.clamp(0, t - 1) * t + xi.clamp(0, t - 1)).long()
            w = (wx * wy * valid.to(wx.dtype)).unsqueeze(0)
            term = flat[:, idx] * w
            out = term if out is None else out + term
    return out


def local_bias(table: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, radius: int = RADIUS) -> torch.Tensor:
    """Relative-position bias per head and key: table [NH,2r+1,2r+1], dx/dy [B,J,2r] -> [B,J,NH,(2r)^2].

    Key order n = a*(2r) + b, with a the x offset and b the y offset (the official flattening).
    """
    tx = (radius + dx).unsqueeze(-1).expand(*dx.shape, dy.shape[-1])  # [B,J,2r(a),2r(b)]
    ty = (radius + dy).unsqueeze(-2).expand(*dy.shape[:-1], dx.shape[-1], dy.shape[-1])
    b = bilinear_table_lookup(table.float(), tx, ty)  # [NH,B,J,2r,2r]
    nh = table.shape[0]
    return b.permute(1, 2, 0, 3, 4).reshape(dx.shape[0], dx.shape[1], nh, -1)


def gather_window(feat_nhwc: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """Keys of each window: feat [B,H,W,C], ix/iy [B,J,2r] -> [B,J,(2r)^2,C] (exact integer gather)."""
    b, h, w, c = feat_nhwc.shape
    jn = ix.shape[1]
    lin = iy.unsqueeze(-2) * w + ix.unsqueeze(-1)  # [B,J,2r(a),2r(b)]: x along a, y along b
    lin = lin.reshape(b, -1, 1).long().expand(-1, -1, c)
    keys = torch.gather(feat_nhwc.reshape(b, h * w, c), 1, lin)
    return keys.reshape(b, jn, -1, c)


def local_attention(
    feat_nhwc: torch.Tensor, joints2d: torch.Tensor, qk: torch.Tensor, table: torch.Tensor, radius: int = RADIUS
) -> torch.Tensor:
    """Joint-aware local attention (reference definition).

    feat_nhwc [B,H,W,C]: projected scale-0 map (no positional embedding), channels last.
    joints2d [B,J,2]: previous-stage 2D joints, normalized crop coords.
    qk [B,J,NH,C]: query folded through W_k and scaled by 1/sqrt(d_head).
    table [NH,2r+1,2r+1]: relative-position bias.
    Returns agg [B,J,NH,C] = sum_n softmax_n(qk.x_n + bias_n) x_n; softmax statistics in float32.
    """
    size = feat_nhwc.shape[1]
    ix, iy, dx, dy = window_coords(joints2d, size, radius)
    keys = gather_window(feat_nhwc, ix, iy)  # [B,J,N,C]
    bias = local_bias(table, dx, dy, radius)  # [B,J,NH,N]
    logits = torch.matmul(qk, keys.transpose(-1, -2)).float() + bias
    probs = torch.softmax(logits, dim=-1).to(keys.dtype)
    return torch.matmul(probs, keys)  # [B,J,NH,C]


def global_attention(keys: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
    """Cross-attention of Q query tokens against one feature map (reference definition).

    keys [B,N,C] (projected map + positional embedding, row-major positions), qk [B,Q,NH,C] -> agg [B,Q,NH,C].
    """
    b, q, nh, c = qk.shape
    logits = torch.matmul(qk.reshape(b, q * nh, c), keys.transpose(1, 2)).float()
    probs = torch.softmax(logits, dim=-1).to(keys.dtype)
    return torch.matmul(probs, keys).reshape(b, q, nh, c)


def global_attention_multiscale(keys: list[torch.Tensor], qk: torch.Tensor) -> torch.Tensor:
    """All scales at once: keys = 4 maps [B,N_s,C], qk [B,S,Q,NH,C] -> agg [B,S,Q,NH,C]."""
    return torch.stack([global_attention(k, qk[:, s]) for s, k in enumerate(keys)], dim=1)


def bilinear_sample_points(feat_nhwc: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """grid_sample(bilinear, align_corners=True, zeros) of feat [B,H,W,C] at points [B,J,2] -> [B,J,C]."""
    b, h, w, c = feat_nhwc.shape
    p = points.float()
    px = (p[..., 0] + 1.0) * 0.5 * (w - 1)
    py = (p[..., 1] + 1.0) * 0.5 * (h - 1)
    x0 = torch.floor(px)
    y0 = torch.floor(py)
    flat = feat_nhwc.reshape(b, h * w, c)
    out = None
    for xi, wx in ((x0, 1.0 - (px - x0)), (x0 + 1.0, px - x0)):
        for yi, wy in ((y0, 1.0 - (py - y0)), (y0 + 1.0, py - y0)):
            valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()  # [B,J]
            vals = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, c))
            term = vals * (wx * wy * valid.to(wx.dtype)).unsqueeze(-1).to(vals.dtype)
            out = term if out is None else out + term
    return out
