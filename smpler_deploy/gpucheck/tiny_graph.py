"""A tiny ONNX graph with SMPLer's input, outputs and metadata (pool -> one Gemm per output): a TensorRT engine of
it builds in seconds, so the self-check exercises TensorRTSession's CUDA plumbing without a minutes-long build."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..outputs import CROP_SIZE, INPUT_NAME, OUTPUT_NAMES

SHAPES = {"vertices": (6890, 3), "joints": (14, 3), "smpl_joints": (24, 3), "smpl_joints2d": (24, 2),
          "rotmat": (24, 3, 3), "betas": (10,), "cam": (3,)}  # fmt: skip


def write_tiny_graph(path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..fileio import write_bytes_atomic

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["feat"], axis=1)]
    inits, outs = [], []
    for name in OUTPUT_NAMES:
        n = math.prod(SHAPES[name])
        inits += [numpy_helper.from_array(rng.standard_normal((3, n)).astype(np.float32), f"w_{name}"),
                  numpy_helper.from_array(rng.standard_normal(n).astype(np.float32) * 0.1, f"b_{name}"),
                  numpy_helper.from_array(np.array([-1, *SHAPES[name]], np.int64), f"s_{name}")]
        nodes += [helper.make_node("Gemm", ["feat", f"w_{name}", f"b_{name}"], [f"flat_{name}"]),
                  helper.make_node("Reshape", [f"flat_{name}", f"s_{name}"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *SHAPES[name]]))
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CROP_SIZE, CROP_SIZE])
    graph = helper.make_graph(nodes, "smpler_tiny", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for k, v in {"producer": "smpler-check-gpu (tiny graph)", "variant": "smpler", "precision": "fp32"}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, model.SerializeToString())
