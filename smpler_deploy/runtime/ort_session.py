"""ONNX Runtime backend: runs the fp32, fp16 and int8 graphs `smpler-export` writes (CPU or CUDA provider)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SmplerError
from ..outputs import CROP_SIZE, INPUT_NAME, OUTPUT_NAMES, SMPLOutput
from .base import check_images

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def graph_traits(model) -> dict:
    """What decides how ORT may run a graph: Q/DQ and fp16 tensors."""
    import onnx

    ops = {n.op_type for n in model.graph.node}
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return {"qdq": "QuantizeLinear" in ops or "DequantizeLinear" in ops,
            "fp16": fp16, "meta": {p.key: p.value for p in model.metadata_props}}


def check_graph_io(path, inputs, outputs) -> None:
    """Refuse a graph whose I/O is not SMPLer's (one input `images` [B,3,224,224] float32, the 7 outputs)."""
    ok = (len(inputs) == 1 and inputs[0].name == INPUT_NAME and inputs[0].type == "tensor(float)"
          and list(inputs[0].shape[1:]) == [3, CROP_SIZE, CROP_SIZE])
    got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
    if not ok:
        raise SmplerError(f"{path}: inputs do not match: expected {INPUT_NAME} tensor(float) "
                          f"[B,3,{CROP_SIZE},{CROP_SIZE}], got {got}")
    names = [o.name for o in outputs]
    if names != list(OUTPUT_NAMES):
        raise SmplerError(f"{path}: outputs do not match: expected {', '.join(OUTPUT_NAMES)}, got {', '.join(names)}")


class OnnxRuntimeSession:
    backend = "onnxruntime"

    def __init__(self, path, *, provider: str = "cpu", threads: int | None = None, io_binding: bool | None = None,
                 optimization: str | None = None):
        import onnx
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SmplerError(f"--onnx {path}: file not found")
        try:
            header = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise SmplerError(f"--onnx {path}: not a readable ONNX model ({e.__class__.__name__})")
        from ..plugins.graph import assert_no_plugins

        assert_no_plugins(header, where=path)
        traits = graph_traits(header)
        if provider not in PROVIDERS:
            raise SmplerError(f"--provider {provider}: expected one of {', '.join(PROVIDERS)}")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise SmplerError(f"--provider {provider}: {PROVIDERS[provider]} is not available in this onnxruntime "
                              "(install onnxruntime-gpu for CUDA)")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        # ORT 1.32's CPU QDQ optimizer corrupts int8 graphs whose other layers are fp16 (46% error measured,
        # shared notes tensorrt-rtx §3); run such graphs unoptimized rather than ship wrong numbers.
        level = optimization or ("disable" if traits["qdq"] and traits["fp16"] else "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        self.optimization = level
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=[PROVIDERS[provider]])
        except Exception as e:
            raise SmplerError(f"--onnx {path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})")
        check_graph_io(path, self.sess.get_inputs(), self.sess.get_outputs())
        self.path = path
        self.provider = provider
        meta = traits["meta"]
        from ..spec import Precision

        # report spelling: "int8-cpu" is ONNX Runtime's int8 layout, "int8" TensorRT's
        prec = meta.get("precision", "fp32")
        self.precision = Precision.from_metadata(meta).name if prec in ("fp32", "fp16", "int8") else prec
        self.info = traits["meta"]
        self.io_binding = provider != "cpu" if io_binding is None else io_binding

    def infer(self, images) -> SMPLOutput:
        x = check_images(images)
        if self.io_binding:
            binding = self.sess.io_binding()
            binding.bind_cpu_input(INPUT_NAME, x)
            for name in OUTPUT_NAMES:
                binding.bind_output(name, "cpu")
            self.sess.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        else:
            outs = self.sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return SMPLOutput(*(np.asarray(o, np.float32) for o in outs))

    def close(self) -> None:
        self.sess = None
