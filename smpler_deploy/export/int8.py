"""INT8 Q/DQ graphs from the fp32 export, calibrated on person crops, with a target.

Both targets use ONNX Runtime's static quantizer (one dependency, one calibration path):
- `trt`: symmetric int8 activations and per-channel weights, zero points 0, biases left in float, Q/DQ only on
  layer inputs and weights - what TensorRT's strongly typed parser accepts (it refuses non-zero zero points
  and int32 bias DQ). ONNX Runtime runs it as fake quantization: slow, but the numbers the engine computes.
- `cpu`: ONNX Runtime's own layout (uint8 activations with zero points, per-channel int8 weights, Q/DQ on
  outputs too) that its CPU optimizer fuses into real int8 kernels. Weights are 7-bit (reduce_range, [-64, 64]):
  ORT's u8s8 kernels on AVX2 CPUs without VNNI multiply with vpmaddubsw, which adds two u8*s8 products in a
  saturating int16; with |w| <= 64 the pair sum is at most 2*255*64 = 32640 < 32767, so every x86 CPU (AVX2,
  AVX-512, VNNI) computes the same result. With full 8-bit weights we measured 8.4 mm mean vertex error on
  an AVX2-only CPU vs 4.0 on an AVX-512 one; 7-bit weights cost ~1.9 mm mean on a VNNI CPU (4.1 -> 6.0 mm over 8
  held-out crops, benchmarks/reports/int8_cpu_range) and are the same everywhere.
Policy: the backbone convolutions first; the decoder (transformer, regressor, SMPL) stays float, because the
fidelity report of the untrained model shows the attention path does not hold at int8 with MinMax calibration.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..errors import OptionError, SmplerError, opt
from ..fileio import atomic_path
from ..outputs import INPUT_NAME
from ..precision import INT8_TARGETS
from .graph_part import cut, merge
from .metadata import set_metadata

# vpmaddubsw: int16(sat)(a0*w0 + a1*w1), a in [0,255], w in int8. The bound the cpu layout's weights must keep.
INT16_MAX = 32767
CPU_WEIGHT_RANGE = (-64, 64)  # ORT's reduce_range for int8 weights
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_calibration_dir(path, limit: int = 512) -> np.ndarray:
    """Person crops from a directory of images (each image taken whole as the person box)."""
    from ..preprocess import ImageTooLargeError, crop_person

    d = Path(path)
    if not d.is_dir():
        raise OptionError("calib", d, "not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    crops = []
    for f in files:
        try:
            crops.append(crop_person(f)[0])
        except ImageTooLargeError:
            raise  # a decompression bomb is refused by name, not skipped as unreadable
        except SmplerError:
            continue  # unreadable files are skipped; an empty set is refused below
    if not crops:
        raise OptionError("calib", d, f"no usable images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(crops)


def backbone_convs(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv" and "/backbone/" in n.name]


class _DropPreprocessHint(logging.Filter):
    """ORT's quantizer logs 'Please consider pre-processing before quantization' at WARNING on every call; our
    graphs come straight from the exporter with shapes inferred, so the hint is noise for our users."""

    def filter(self, record):
        return "pre-processing before quantization" not in record.getMessage()


class _Reader:
    def __init__(self, images: np.ndarray, progress=None):
        self.images, self.i, self.progress = images, 0, progress

    def get_next(self):
        if self.i >= len(self.images):
            return None
        x = self.images[self.i: self.i + 1]
        self.i += 1
        if self.progress:
            self.progress(self.i, len(self.images))
        return {INPUT_NAME: x}

    def rewind(self):
        self.i = 0


def quantized_nodes(model) -> list[str]:
    """Layers that run in int8: those whose weight comes through a DequantizeLinear of an int8 initializer.

    (Activation DQ outputs also feed Add/Relu/Resize/Shape, which stay float; they are not counted.)"""
    inits = {t.name for t in model.graph.initializer}
    weight_dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return [n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] in weight_dq]


def check_trt_compatible(model) -> None:
    """Zero points must be 0 and no int32 bias DQ (TensorRT's parser refuses both)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zp = numpy_helper.to_array(inits[n.input[2]])
            if np.any(zp != 0) or zp.dtype == np.int32:
                raise SmplerError(f"int8 {opt('target')} trt: node {n.name} has a zero point TensorRT refuses "
                                  "(internal error)")


def pair_sum_bound(weight_absmax: int, act_max: int = 255) -> int:
    """Largest |a0*w0 + a1*w1| vpmaddubsw can form from u8 activations and int8 weights within the bound."""
    return 2 * act_max * weight_absmax


def check_no_int16_saturation(model) -> None:
    """Every int8 weight of a u8-activation (cpu layout) conv keeps vpmaddubsw's pair sum within int16."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == 3:  # INT8
            w = numpy_helper.to_array(inits[n.input[0]])
            if w.size and pair_sum_bound(int(np.abs(w.astype(np.int32)).max())) > INT16_MAX:
                raise SmplerError(f"int8 {opt('target')} cpu: weight {n.input[0]} reaches |w| = "
                                  f"{np.abs(w.astype(np.int32)).max()}, "
                                  f"which saturates int16 on AVX2 CPUs without VNNI (internal error)")


def quantize(fp32_path, out_path, images: np.ndarray, *, target: str = "trt", meta: dict | None = None,
             progress=None, reduce_range: bool | None = None, whole_graph: bool = False) -> dict:
    """`reduce_range` (7-bit weights) defaults to True for the cpu target (see the module docstring).
    ORT quantizes the part of the graph the backbone convolutions need (export/graph_part: the same graph, in half
    the time); `whole_graph=True` hands it the whole graph."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in INT8_TARGETS:
        raise OptionError("target", target, f"expected one of {', '.join(INT8_TARGETS)}")
    t0 = time.perf_counter()
    whole = onnx.load(str(fp32_path))
    nodes = backbone_convs(whole)
    if target == "trt":
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                 "OpTypesToExcludeOutputQuantization": ["Conv"]}
        act = QuantType.QInt8
    else:
        extra = {"WeightSymmetric": True}
        act = QuantType.QUInt8
    if reduce_range is None:
        reduce_range = target == "cpu"
    hint_filter = _DropPreprocessHint()
    logging.getLogger().addFilter(hint_filter)
    try:
        with atomic_path(out_path, suffix=".onnx") as tmp:
            extra["CalibTensorRangeSymmetric"] = target == "trt"
            part = None if whole_graph else cut(whole, set(nodes))
            quantize_static(str(fp32_path) if part is None else part.model, str(tmp), _Reader(images, progress),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], nodes_to_quantize=nodes,
                            per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range, extra_options=extra)
            model = onnx.load(str(tmp))  # the whole graph, to check it and write its metadata
            if part is not None:
                model = merge(whole, part, model)
            if target == "trt":
                check_trt_compatible(model)
            elif reduce_range:
                check_no_int16_saturation(model)
            qnodes = quantized_nodes(model)
            info = dict(meta or {})
            info.update(precision="int8", int8_target=target, calibration_images=str(len(images)),
                        calibration_method="minmax", weight_bits="7" if reduce_range else "8",
                        quantized_node_count=str(len(qnodes)),
                        quantized_nodes=json.dumps(qnodes))
            set_metadata(model, info)
            onnx.save(model, str(tmp))
    finally:
        logging.getLogger().removeFilter(hint_filter)
    return {"quantized_nodes": qnodes, "seconds": time.perf_counter() - t0, "target": target}
