"""Plugin nodes in ONNX graphs: names, and the checks builders and ONNX Runtime make (no torch import)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SmplerError, opt
from ..export.metadata import read_header

DOMAIN = "smpler"
PLUGIN_NAMESPACE = "smpler"
PLUGIN_VERSION = "1"
LOCAL_OP = "SmplerLocalAttention"
GLOBAL_OP = "SmplerGlobalAttention"
PLUGIN_OPS = (LOCAL_OP, GLOBAL_OP)


def _attr(node, name: str, default: str) -> str:
    for a in node.attribute:
        if a.name == name:
            return a.s.decode() if a.s else default
    return default


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def plugin_nodes(model) -> list[tuple[str, str]]:
    """(node name, op_type) of every TensorRT plugin node in an ONNX model (ModelProto or path), functions too."""
    if isinstance(model, (str, os.PathLike)):
        model = read_header(model)
    found = []
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in _all_nodes(g):
            attrs = {a.name for a in node.attribute}
            if node.op_type in PLUGIN_OPS or node.domain == DOMAIN or "plugin_namespace" in attrs:
                found.append((node.name, node.op_type))
    return found


def assert_no_plugins(onnx_path, where=None) -> None:
    """For the ONNX Runtime backend: refuse graphs that only TensorRT (with our plugins registered) can run.

    `onnx_path`: a path or an already loaded ModelProto (`where` then names it in the message)."""
    loaded = hasattr(onnx_path, "graph")
    path = str(where) if where is not None else "ONNX model" if loaded else str(Path(onnx_path))
    nodes = plugin_nodes(onnx_path if loaded else read_header(onnx_path, path))
    if nodes:
        ops = {op for _, op in nodes}
        kinds = [op for op in PLUGIN_OPS if op in ops] + sorted(ops - set(PLUGIN_OPS))
        raise SmplerError(
            f"{path}: graph contains TensorRT plugin nodes ({', '.join(kinds)}); "
            f"ONNX Runtime cannot run them — export without {opt('plugins')}"
        )


def plugin_summary(model) -> list[dict]:
    """Unique plugins an onnx.ModelProto uses: [{name, namespace, version, count}] (graph and functions)."""
    found: dict[tuple, dict] = {}
    for g in [model.graph, *model.functions]:
        for node in _all_nodes(g):
            if node.domain != DOMAIN:
                continue
            key = (node.op_type, _attr(node, "plugin_namespace", PLUGIN_NAMESPACE), _attr(node, "plugin_version", "1"))
            entry = found.setdefault(key, {"name": key[0], "namespace": key[1], "version": key[2], "count": 0})
            entry["count"] += 1
    return list(found.values())
