"""ONNX Runtime backend: runs the fp32, fp16 and int8 graphs `smpler-export` writes (CPU or CUDA provider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OptionError, SmplerError, opt
from ..export.metadata import meta_bool, metadata, read_header
from ..outputs import CROP_SIZE, INPUT_NAME, OUTPUT_NAMES, SMPLOutput
from ..precision import GRAPH_KINDS, Precision
from .base import Session, SessionInfo
from .ort_providers import PROVIDERS, check_available, parse_provider, provider_list
from .timing import EventTimer, TorchEvents


def graph_traits(model) -> dict:
    """What decides how ORT may run a graph: Q/DQ and fp16 tensors."""
    import onnx

    ops = {n.op_type for n in model.graph.node}
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return {"qdq": "QuantizeLinear" in ops or "DequantizeLinear" in ops, "fp16": fp16, "meta": metadata(model)}


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


def _stream_timer(device_id: int) -> EventTimer | None:
    """CUDA events on a torch stream that ORT is told to run on (user_compute_stream): device time of the run
    alone. None where torch has no CUDA (then GPU cells report host latency only)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return EventTimer(TorchEvents(), torch.cuda.Stream(device=device_id))
    except Exception:  # noqa: BLE001 - timing is optional
        return None


def _graph_info(meta: dict[str, str], device: str, providers) -> SessionInfo:
    """The model facts a graph's smpler-deploy metadata records (`export/onnx_export.base_metadata`)."""
    checkpoint = meta.get("checkpoint")
    return SessionInfo(
        variant=meta.get("variant"), untrained=meta_bool(meta, "untrained"),
        standin_body=meta_bool(meta, "body_model_standin"),
        checkpoint=None if checkpoint is None or checkpoint.startswith("none") else checkpoint,
        checkpoint_sha256=meta.get("checkpoint_sha256") or None, body_model=meta.get("body_model") or None,
        device=device, providers=tuple(providers))


class OnnxRuntimeSession(Session):
    backend = "onnxruntime"
    where = "onnxruntime session"

    def __init__(self, path, *, provider: str = "cpu", threads: int | None = None, io_binding: bool | None = None,
                 optimization: str | None = None, batches=(1,), trt_cache: str | Path | None = None,
                 trt_fp16: bool = False, device_id: int = 0, where: str | None = None, spin_wait: bool = True):
        """where: what the errors about the file name (default: the path; a command passes its flag too).
        spin_wait: ONNX Runtime's intra-op threads busy-wait between operators (its default, the fastest when
        the session has the cores to itself); False lets them sleep, for a process whose other threads need
        the cores (smpler-run's decode/crop/overlay threads: benchmarks/reports/pipeline)."""
        import onnxruntime as ort

        provider = parse_provider(provider)
        check_available(provider, ort.get_available_providers())  # before reading the graph: fails fast
        path = Path(path)
        label = where or str(path)
        if not path.is_file():
            raise SmplerError(f"{label}: file not found")
        header = read_header(path, label)
        from ..containment import onnx_external_files
        from ..plugins.graph import assert_no_plugins

        assert_no_plugins(header, where=label)
        onnx_external_files(header, path, label)  # ONNX Runtime refuses escaping ones too, less clearly
        traits = graph_traits(header)
        meta = traits["meta"]
        # "int8-cpu" is ONNX Runtime's int8 layout, "int8" TensorRT's; a graph without smpler metadata runs as
        # fp32, one whose metadata names no precision we know has none (None)
        precision = (Precision.from_metadata({"precision": "fp32", **meta}, label)
                     if meta.get("precision", "fp32") in GRAPH_KINDS else None)
        self._timer = _stream_timer(device_id) if provider != "cpu" else None
        providers = provider_list(provider, precision=precision, qdq=traits["qdq"],
                                  batches=batches,
                                  cache_dir=trt_cache, trt_fp16=trt_fp16, device_id=device_id,
                                  stream=int(self._timer.stream.cuda_stream) if self._timer else None)
        if provider == "tensorrt":
            Path(trt_cache).mkdir(parents=True, exist_ok=True)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        if not spin_wait:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ORT 1.32's CPU QDQ optimizer corrupts int8 graphs whose other layers are fp16 (measured: 46% relative
        # error at any optimization level, 0.4% with none, on a graph onnx.reference computes correctly); run such
        # graphs unoptimized rather than ship wrong numbers.
        level = optimization or ("disable" if traits["qdq"] and traits["fp16"] else "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        self.optimization = level
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            raise SmplerError(f"{label}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})")
        used = self.sess.get_providers()
        if not used or used[0] != PROVIDERS[provider]:  # ORT falls back silently when an EP fails to start
            raise OptionError("provider", provider, f"onnxruntime could not start {PROVIDERS[provider]} and fell "
                              f"back to {', '.join(used)} (CUDA/cuDNN/TensorRT libraries not loadable?)")
        check_graph_io(path, self.sess.get_inputs(), self.sess.get_outputs())
        self.precision = precision
        self.path = path
        self.provider = provider
        self.device_id = device_id
        self.info = _graph_info(meta, "cpu" if provider == "cpu" else f"cuda:{device_id}", used)
        self.io_binding = provider != "cpu" if io_binding is None else io_binding
        self._inputs: dict = {}  # shape -> device OrtValue, reused (addresses stay put between calls)

    def _bound_run(self, x):
        binding = self.sess.io_binding()
        if self.provider == "cpu":
            binding.bind_cpu_input(INPUT_NAME, x)
            for name in OUTPUT_NAMES:
                binding.bind_output(name, "cpu")
        else:  # inputs copied to a reused device buffer, outputs left on the device until the run is timed
            import onnxruntime as ort

            val = self._inputs.get(x.shape)
            if val is None:
                val = self._inputs[x.shape] = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id)
            else:
                val.update_inplace(x)
            binding.bind_ortvalue_input(INPUT_NAME, val)
            for name in OUTPUT_NAMES:
                binding.bind_output(name, "cuda", self.device_id)
        if self._timer:
            self._timer.start()
        self.sess.run_with_iobinding(binding)
        if self._timer:
            self._timer.stop()
            self.last_device_ms = self._timer.elapsed_ms()
        return binding.copy_outputs_to_cpu()

    def _run(self, images: np.ndarray) -> SMPLOutput:
        if self.io_binding:
            outs = self._bound_run(images)
        else:
            outs = self.sess.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return SMPLOutput(*(np.asarray(o, np.float32) for o in outs))

    def _release(self) -> None:
        self.sess = None
        self._inputs.clear()
