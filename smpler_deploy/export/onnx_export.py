"""PyTorch -> ONNX at fp32 and fp16 (precision set per module before export), plus graph checks and metadata.

Legacy TorchScript exporter, opset 19 (Q/DQ with fp16 scales needs >= 19; TensorRT 10.3's parser takes 9-20).
Batch is dynamic; the crop is fixed at 224. The written file is the one ONNX Runtime evaluates here and
TensorRT builds, so every precision is measured on exactly the graph that ships.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import SmplerError
from ..fileio import atomic_path
from ..outputs import CROP_SIZE, INPUT_NAME, OUTPUT_NAMES
from ..precision import Precision
from .metadata import read_header, read_metadata, set_metadata

OPSET = 19
FORBIDDEN_OPS = ("ScatterND", "If", "Einsum", "Range", "Loop")
FP32 = Precision("fp32")


class _Flat(torch.nn.Module):
    """Outputs as a flat tuple in OUTPUT_NAMES order."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return tuple(self.model(images))


def graph_report(model) -> dict:
    """Node count, op histogram, and any op TensorRT or ONNX Runtime handle badly (FORBIDDEN_OPS)."""
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"nodes": len(model.graph.node), "ops": dict(sorted(ops.items())),
            "forbidden": {op: ops[op] for op in FORBIDDEN_OPS if op in ops}}


def base_metadata(smpler, precision: Precision, batch, plugins: bool) -> dict:
    info = smpler.info
    return {
        "producer": f"smpler-deploy {__version__}", "package_version": __version__, "variant": smpler.variant,
        "precision": precision.kind, "opset": str(OPSET), "batch_profile": ":".join(map(str, batch)),
        "checkpoint": str(info.get("checkpoint") or "none (default untrained model)"),
        "checkpoint_sha256": str(info.get("checkpoint_sha256") or ""),
        "untrained": str(bool(info.get("untrained"))).lower(),
        "body_model_standin": str(bool(info.get("standin_body"))).lower(),
        "body_model": str(info.get("body_model", "")),
        "plugins": str(bool(plugins)).lower(),
    }


def export_torch_graph(smpler, path, *, precision: Precision = FP32, plugins: bool = False, batch=(1, 1, 8)) -> dict:
    """Trace `smpler` (eval) at the given precision (fp32 or fp16; int8 is calibrated) and write a checked ONNX
    file atomically."""
    import onnx

    if precision.kind not in ("fp32", "fp16"):
        raise SmplerError(f"precision {precision}: traced precisions are fp32 and fp16 (int8 is calibrated)")
    t0 = time.perf_counter()
    m = copy.deepcopy(smpler).eval()
    if precision.kind == "fp16":
        m.set_precision("fp16")
    m.set_attention("plugin" if plugins else "torch")
    example = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)  # batch 2: batch 1 would specialize
    dyn = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(_Flat(m), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dyn,
                              do_constant_folding=True)
        model = onnx.load(str(tmp))  # the whole graph, to write its metadata (read_header only reads)
        rep = graph_report(model)
        if rep["forbidden"]:
            raise SmplerError(f"export produced unsupported nodes {rep['forbidden']} (internal error)")
        set_metadata(model, base_metadata(smpler, precision, batch, plugins))
        if not plugins:  # custom-domain nodes have no schema for the checker
            onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    rep["seconds"] = time.perf_counter() - t0
    return rep


def fidelity_inputs(n: int = 4) -> np.ndarray:
    """The fixed inputs export measures fidelity on: sample-photo crops not used for calibration."""
    from ..preprocess import heldout_crops

    return heldout_crops(n)[0]


def torch_reference(smpler, images: np.ndarray):
    """What a graph's fidelity is measured against: the PyTorch fp32 model (torch attention) on `images`."""
    with torch.no_grad():
        return copy.deepcopy(smpler).set_attention("torch").set_precision("fp32")(torch.from_numpy(images)).numpy()


def measure_fidelity(smpler, onnx_path, images=None, reference=None) -> dict:
    """Run the written graph in ONNX Runtime and compare with the PyTorch fp32 model on the same inputs;
    `reference` (`torch_reference` of `smpler` on those inputs) when several graphs are compared on them."""
    from ..fidelity import fidelity
    from ..runtime.ort_session import OnnxRuntimeSession

    x = fidelity_inputs() if images is None else images
    ref = torch_reference(smpler, x) if reference is None else reference
    sess = OnnxRuntimeSession(onnx_path)
    try:
        return fidelity(ref, sess.infer(x))
    finally:
        sess.close()


def check_fp32_graph(path) -> dict[str, str]:
    """The metadata of `path` when it is an fp32 graph written by this package without plugins (what int8
    quantizes); one-line SmplerError otherwise."""
    meta = read_metadata(path)
    if not meta.get("producer", "").startswith("smpler-deploy ") or meta.get("precision") != "fp32" \
            or meta.get("plugins") == "true":
        raise SmplerError(f"{path}: expected an fp32 graph exported by smpler-deploy without plugins (found producer "
                          f"{meta.get('producer', 'none')!r}, precision {meta.get('precision', 'none')!r}, "
                          f"plugins {meta.get('plugins', 'none')!r})")
    return meta


def export_onnx(path, *, precision: Precision = FP32, variant: str = "smpler", checkpoint=None, smpl_model=None,
                h36m_regressor=None, model=None, calib=None, calib_images=None,
                plugins: bool = False, batch=(1, 1, 8), log=None, progress: bool = True, fp32_graph=None) -> dict:
    """Write the ONNX graph of one precision (int8 in its layout, `precision.target`); int8 is calibrated on
    `calib` (a directory; or `calib_images`, already loaded) or the built-in set. For int8, `fp32_graph` (an fp32
    graph this package wrote, without plugins) is quantized as it is instead of tracing the model again.

    Returns a summary: path, graph report, seconds, quantized nodes (int8).
    """
    from ..model.checkpoint import load_model

    log = log or (lambda msg: None)
    target = precision.target
    if fp32_graph is not None:
        if precision.kind != "int8":
            raise SmplerError(f"precision {precision}: an existing fp32 graph is only quantized (int8), not re-exported")
        fp32_meta = check_fp32_graph(fp32_graph)
    if precision.kind == "int8":
        from .int8 import load_calibration_dir

        if plugins:
            raise SmplerError(f"precision {precision} with plugins: the int8 graph is calibrated with ONNX Runtime, "
                              "which cannot run plugin nodes; export plugin graphs at fp32 or fp16")
        if calib_images is None and calib:
            calib_images = load_calibration_dir(calib)
    if model is None and fp32_graph is None:
        model = load_model(variant, checkpoint, smpl_model, h36m_regressor=h36m_regressor)
    t0 = time.perf_counter()
    path = Path(path)
    if precision.kind != "int8":
        log(f"exporting {precision} graph (torch.onnx, opset {OPSET}) ...")
        rep = export_torch_graph(model, path, precision=precision, plugins=plugins, batch=batch)
        return {"path": str(path), "report": rep, "seconds": time.perf_counter() - t0}
    import tempfile

    from ..model.checkpoint import calibration_batch
    from .int8 import quantize

    builtin = calib_images is None
    if builtin:
        calib_images = calibration_batch(16)
        source = "built-in set: 16 crops of scikit-image sample photos (use --calib DIR with a few hundred person crops)"
    else:
        source = f"{len(calib_images)} images from {calib}"
    from ..fidelity import calibration_warning

    warning = calibration_warning(len(calib_images), builtin=builtin)
    if warning:
        log(warning)
    with tempfile.TemporaryDirectory() as tmp:
        if fp32_graph is None:
            fp32 = Path(tmp) / "fp32.onnx"
            log(f"exporting fp32 graph to calibrate from ...")
            export_torch_graph(model, fp32, precision=FP32, batch=batch)
            meta = read_metadata(fp32)
        else:
            fp32, meta = Path(fp32_graph), fp32_meta
        meta["calibration_set"] = source
        log(f"calibrating int8 (--target {target}) on {source} ...")
        from tqdm import tqdm

        bar = tqdm(total=len(calib_images), desc="calibration", unit="img", leave=False, disable=not progress)

        def progress(i, n):
            bar.n = i
            bar.refresh()

        try:
            q = quantize(fp32, path, calib_images, target=target, meta=meta, progress=progress)
        finally:
            bar.close()
    rep = graph_report(read_header(path))
    return {"path": str(path), "report": rep, "seconds": time.perf_counter() - t0,
            "quantized_nodes": q["quantized_nodes"], "calibration_set": source, "target": target}
