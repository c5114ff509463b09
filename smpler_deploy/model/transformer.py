"""SMPLer's refinement transformer (official module and parameter names), export-friendly.

Cross-attention uses the folded form of `attention.py` (key/value projections moved onto the query side and
after the weighted sum); the attention kernels themselves are pluggable (`ops`): PyTorch reference, Triton
kernels, or ONNX plugin nodes. `TransformerLayer.standard` is textbook attention in the official layer's layout
(keys projected): the self-attention of every path, and every attention of the official-style baseline
(`official_style.py`, which drives these modules' weights the official way).
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn

from . import attention as A
from ..body.lbs import rot6d_to_rotmat
from ..plugins.abi import CHANNELS as HIDDEN, HEAD_DIM, HEADS, RADIUS  # one definition, shared with the kernels

NUM_TOKENS = 26  # 24 joints + shape + camera
NUM_JOINTS = 24
LN_EPS = 1e-12
FEAT_RES = (56, 28, 14, 7)

TORCH_OPS = types.SimpleNamespace(local_attention=A.local_attention,
                                  global_attention_multiscale=A.global_attention_multiscale)


class LayerNorm32(nn.LayerNorm):
    """nn.LayerNorm whose statistics are always float32 (eps 1e-12 is 0 in fp16; squares overflow)."""

    def forward(self, x):
        w = self.weight.float()
        return nn.functional.layer_norm(x.float(), self.normalized_shape, w, self.bias.float(), self.eps).to(x.dtype)


class _QKV(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))


class TransformerLayer(nn.Module):
    """Pre-LN layer (official TransformerLayer_v1); BertLayerNorm == nn.LayerNorm(eps=1e-12)."""

    def __init__(self):
        super().__init__()
        self.LayerNorm_attn = LayerNorm32(HIDDEN, eps=LN_EPS)
        self.attention = _QKV()
        self.linear_attn = nn.Linear(HIDDEN, HIDDEN)
        self.mlp = nn.Sequential(LayerNorm32(HIDDEN, eps=LN_EPS), nn.Linear(HIDDEN, 2 * HIDDEN), nn.GELU(),
                                 nn.Linear(2 * HIDDEN, HIDDEN), nn.Dropout(0.1))
        self.dropout = nn.Dropout(0.1)

    def _heads(self, x):  # [B,T,128] -> [B,T,NH,1,32]
        return x.reshape(x.shape[0], x.shape[1], HEADS, 1, HEAD_DIM)

    def fold_query(self, x: torch.Tensor) -> torch.Tensor:
        """qk [B,T,NH,128]: per-head query mapped through W_k and scaled, so logits = qk . raw_key."""
        q = self._heads(self.attention.query(self.LayerNorm_attn(x)))
        wk = self.attention.key.weight.reshape(HEADS, HEAD_DIM, HIDDEN)
        return torch.matmul(q, wk).squeeze(-2) * (1.0 / math.sqrt(HEAD_DIM))

    def finish(self, x: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """From agg [B,T,NH,128] (weighted raw keys): value projection, output projection, residual, MLP."""
        wv_t = self.attention.value.weight.reshape(HEADS, HEAD_DIM, HIDDEN).transpose(1, 2)
        ctx = torch.matmul(agg.unsqueeze(-2), wv_t).reshape(x.shape[0], x.shape[1], HIDDEN)
        return self._residual(x, ctx + self.attention.value.bias)

    def _residual(self, x, ctx):
        a = x + self.dropout(self.linear_attn(ctx))
        return a + self.mlp(a)

    def standard(self, x, keys=None, bias=None):
        """Textbook attention laid out as the official (BERT-style) layer: keys and values projected once, queries
        [B,NH,T,32] against keys [B,NH,N,32] in one product. x [B,T,128]; keys [B,N,128] (None: self-attention
        on the normalized x); bias added to the logits, broadcast to [B,NH,T,N]."""
        h = self.LayerNorm_attn(x)
        kv = h if keys is None else keys
        att = self.attention
        q, k, v = (_split_heads(lin(t)) for lin, t in ((att.query, h), (att.key, kv), (att.value, kv)))
        logits = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)).float()
        if bias is not None:
            logits = logits + bias
        ctx = torch.matmul(torch.softmax(logits, -1).to(v.dtype), v)  # [B,NH,T,32]
        return self._residual(x, ctx.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], HIDDEN))

    def self_attention(self, x):
        return self.standard(x)


def _split_heads(y: torch.Tensor) -> torch.Tensor:  # [B,L,128] -> [B,NH,L,32]
    return y.reshape(y.shape[0], y.shape[1], HEADS, HEAD_DIM).permute(0, 2, 1, 3)


class _Wrap(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer_layer = TransformerLayer()


class _SelfWrap(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_trans_layer = TransformerLayer()


class GlobalUnit(nn.Module):
    """One cross-attention layer per scale; the unit output is the mean of the four residual outputs."""

    def __init__(self):
        super().__init__()
        self.trans_layer_list = nn.ModuleList(_Wrap() for _ in FEAT_RES)

    def forward(self, x, keys: list[torch.Tensor], ops):
        layers = [w.transformer_layer for w in self.trans_layer_list]
        qk = torch.stack([layer.fold_query(x) for layer in layers], dim=1)  # [B,4,T,NH,128]
        agg = ops.global_attention_multiscale(keys, qk)
        outs = [layer.finish(x, agg[:, s]) for s, layer in enumerate(layers)]
        return (outs[0] + outs[1] + outs[2] + outs[3]) * 0.25


class LocalUnit(nn.Module):
    def __init__(self):
        super().__init__()
        self.relative_position_encoding_table = nn.ParameterList([nn.Parameter(torch.zeros(1, HEADS, 2 * RADIUS + 1, 2 * RADIUS + 1))])
        self.trans_layer_list = nn.ModuleList([_Wrap()])

    def forward(self, x, feat_nhwc, joints2d, ops):
        layer = self.trans_layer_list[0].transformer_layer
        table = self.relative_position_encoding_table[0][0]
        agg = ops.local_attention(feat_nhwc, joints2d, layer.fold_query(x), table)
        return layer.finish(x, agg)


class TransformerUnit(nn.Module):
    def __init__(self):
        super().__init__()
        self.global_unit = GlobalUnit()
        self.local_unit = LocalUnit()
        self.self_trans_layer = _SelfWrap()

    def forward(self, x, keys, feat0, joints2d, ops):
        xg = self.global_unit(x, keys, ops)
        xl = self.local_unit(x[:, :NUM_JOINTS], feat0, joints2d, ops)
        # Concat instead of the official in-place row write (which exports as ScatterND).
        xm = torch.cat([0.5 * (xg[:, :NUM_JOINTS] + xl), xg[:, NUM_JOINTS:]], dim=1)
        return self.self_trans_layer.self_trans_layer.self_attention(xm)


class TransformerBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.early_embedding = nn.Linear(HIDDEN, HIDDEN)
        self.position_embeddings = nn.Embedding(NUM_TOKENS, HIDDEN)
        self.feat_position_embedding = nn.Parameter(torch.zeros(1, HIDDEN, FEAT_RES[0], FEAT_RES[0]))
        self.trans_units = nn.ModuleList(TransformerUnit() for _ in range(2))
        self.head = nn.Linear(HIDDEN, HIDDEN)
        self.residual = nn.Linear(HIDDEN, HIDDEN)
        self.dropout = nn.Dropout(0.1)
        for s, r in enumerate(FEAT_RES):  # pooled positional tables, derived (hazard #7)
            self.register_buffer(f"pos_{s}", torch.zeros(1, r * r, HIDDEN), persistent=False)

    @torch.no_grad()
    def refresh(self):
        q = self.feat_position_embedding
        for s in range(len(FEAT_RES)):
            if s:
                q = nn.functional.avg_pool2d(q, 2, 2)
            getattr(self, f"pos_{s}").copy_(q.flatten(2).transpose(1, 2))

    def forward(self, q, feats_nhwc, joints2d, ops):
        x = self.dropout(self.early_embedding(q) + self.position_embeddings.weight)
        b = q.shape[0]
        keys = [f.reshape(b, -1, HIDDEN) + getattr(self, f"pos_{s}") for s, f in enumerate(feats_nhwc)]
        for unit in self.trans_units:
            x = unit(x, keys, feats_nhwc[0], joints2d, ops)
        return self.head(x) + self.residual(q)


class LayerNormChannel(nn.Module):
    """LayerNorm over channels of an NCHW map; returns NHWC (what every consumer wants)."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.channels = c  # a Python int: traced shapes would become graph values

    def forward(self, x):
        y = nn.functional.layer_norm(x.permute(0, 2, 3, 1).float(), (self.channels,), self.weight.float(),
                                     self.bias.float(), LN_EPS)
        return y.to(x.dtype)


class TransformerBlockWrapped(nn.Module):
    """One refinement block: projections, joint query injection, transformer, parameter deltas."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.raw_feat_projection_layer = nn.ModuleDict(
            {str(s): nn.Sequential(nn.Conv2d(c, HIDDEN, 1), LayerNormChannel(HIDDEN)) for s, c in enumerate(widths)}
        )
        self.joint_feat_projection_layer = nn.ModuleDict({"0": nn.Linear(HIDDEN, HIDDEN)})
        self.trans_block = TransformerBlock()
        self.theta_predictor = nn.Linear(HIDDEN, 6)
        self.beta_predictor = nn.Linear(HIDDEN, 10)
        self.cam_predictor = nn.Linear(HIDDEN, 3)

    def forward(self, q, feats, joints2d, ops):
        """q [B,26,128] float32; feats in the compute dtype; joints2d float32. Deltas come back float32."""
        cdt = feats[0].dtype
        q = q.to(cdt)
        proj = [self.raw_feat_projection_layer[str(s)](f) for s, f in enumerate(feats)]  # NHWC
        e = self.joint_feat_projection_layer["0"](A.bilinear_sample_points(proj[0], joints2d).to(cdt))
        q2 = torch.cat([q[:, :NUM_JOINTS] + e, q[:, NUM_JOINTS:] + e.mean(1, keepdim=True)], dim=1)
        out = self.trans_block(q2, proj, joints2d, ops)
        out32 = out.float()  # the predictors and rotation math run in float32 (fp32 islands)
        d_rot = rot6d_to_rotmat(self.theta_predictor(out32[:, :NUM_JOINTS]))
        return d_rot, self.beta_predictor(out32[:, NUM_JOINTS]), self.cam_predictor(out32[:, NUM_JOINTS + 1]), out32
