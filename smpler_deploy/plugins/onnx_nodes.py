"""The attention as custom ONNX nodes that TensorRT's parser maps to our IPluginV3 plugins.

`local_attention_plugin` / `global_attention_multiscale_plugin` have the signatures of the reference functions
(`smpler_deploy.model.attention`) and compute them in eager mode; under the legacy exporter
(`torch.onnx.export(..., dynamo=False, opset_version=19, custom_opsets=CUSTOM_OPSETS)`) each becomes one node:

- `SmplerLocalAttention(feat_nhwc, joints2d, qk, table)`, int attribute `radius`;
- `SmplerGlobalAttention(qk, keys0, keys1, keys2, keys3)`;

in domain "smpler", with string attributes `plugin_namespace="smpler"` and `plugin_version="1"` (TensorRT 10.3
ignores the domain and finds the creator only through `plugin_namespace`). Custom domains get no ONNX shape
inference, so the symbolic functions type their outputs (same type and shape as `qk`).
"""

from __future__ import annotations


import torch

from ..errors import SmplerError
from ..model import attention as ref
from .abi import NUM_SCALES

from .graph import (  # noqa: F401  (re-exported: node names and inspection live in the torch-free module)
    DOMAIN, GLOBAL_OP, LOCAL_OP, PLUGIN_NAMESPACE, PLUGIN_OPS, PLUGIN_VERSION, assert_no_plugins, plugin_nodes,
)
CUSTOM_OPSETS = {DOMAIN: 1}  # pass to torch.onnx.export(custom_opsets=...)


def _typed(out, like):
    out.setType(like.type())  # the output has qk's dtype and shape (batch stays symbolic when qk's is)
    return out


class _LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat_nhwc, joints2d, qk, table, radius):
        return ref.local_attention(feat_nhwc, joints2d, qk, table, radius)

    @staticmethod
    def symbolic(g, feat_nhwc, joints2d, qk, table, radius):
        out = g.op(f"{DOMAIN}::{LOCAL_OP}", feat_nhwc, joints2d, qk, table, radius_i=int(radius),
                   plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION)
        return _typed(out, qk)


class _GlobalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qk, k0, k1, k2, k3):
        return ref.global_attention_multiscale([k0, k1, k2, k3], qk)

    @staticmethod
    def symbolic(g, qk, k0, k1, k2, k3):
        out = g.op(f"{DOMAIN}::{GLOBAL_OP}", qk, k0, k1, k2, k3,
                   plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION)
        return _typed(out, qk)


def _fp32(t):
    return t if t.dtype == torch.float32 else t.float()  # no no-op Cast nodes in the export


def local_attention_plugin(feat_nhwc, joints2d, qk, table, radius: int = ref.RADIUS):
    """Reference local attention in eager; one `SmplerLocalAttention` node when exported."""
    return _LocalAttention.apply(feat_nhwc, _fp32(joints2d), qk, _fp32(table), int(radius))


def global_attention_multiscale_plugin(keys, qk):
    """Reference multi-scale global attention in eager; one `SmplerGlobalAttention` node when exported."""
    if len(keys) != NUM_SCALES:
        raise SmplerError(f"keys: {NUM_SCALES} scales expected, got {len(keys)}")
    return _GlobalAttention.apply(qk, *keys)
