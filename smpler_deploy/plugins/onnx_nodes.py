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

import os
from pathlib import Path

import torch

from ..errors import SmplerError
from ..model import attention as ref

DOMAIN = "smpler"
PLUGIN_NAMESPACE = "smpler"
PLUGIN_VERSION = "1"
LOCAL_OP = "SmplerLocalAttention"
GLOBAL_OP = "SmplerGlobalAttention"
PLUGIN_OPS = (LOCAL_OP, GLOBAL_OP)
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
    if len(keys) != 4:
        raise SmplerError(f"keys: 4 scales expected, got {len(keys)}")
    return _GlobalAttention.apply(qk, *keys)


# ------------------------------------------------------------------------------------------------ inspection

def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def plugin_nodes(model) -> list[tuple[str, str]]:
    """(node name, op_type) of every TensorRT plugin node in an ONNX model (ModelProto or path), functions too."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model), load_external_data=False)
    found = []
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in _all_nodes(g):
            attrs = {a.name for a in node.attribute}
            if node.op_type in PLUGIN_OPS or node.domain == DOMAIN or "plugin_namespace" in attrs:
                found.append((node.name, node.op_type))
    return found


def assert_no_plugins(onnx_path: str | os.PathLike) -> None:
    """For the ONNX Runtime backend: refuse graphs that only TensorRT (with our plugins registered) can run."""
    path = Path(onnx_path)
    try:
        nodes = plugin_nodes(path)
    except FileNotFoundError:
        raise SmplerError(f"{path}: file not found") from None
    except Exception as e:  # onnx's DecodeError and friends
        raise SmplerError(f"{path}: not a readable ONNX model ({e.__class__.__name__})") from None
    if nodes:
        ops = {op for _, op in nodes}
        kinds = [op for op in PLUGIN_OPS if op in ops] + sorted(ops - set(PLUGIN_OPS))
        raise SmplerError(
            f"{path}: graph contains TensorRT plugin nodes ({', '.join(kinds)}); "
            "ONNX Runtime cannot run them — export without --plugins"
        )
