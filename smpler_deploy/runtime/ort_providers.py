"""ONNX Runtime execution providers: which ones a request needs and with what options (plain code, tested on CPU).

`provider`: cpu | cuda | tensorrt. CUDA and TensorRT come with onnxruntime-gpu (`pip install smpler-deploy[gpu]`,
which replaces onnxruntime). The TensorRT EP gets optimization-profile shapes from the benchmark's batch sizes,
an engine + timing cache directory (engines are built once, then loaded), int8 for Q/DQ graphs, and fp16 only
when asked (`trt_fp16` lets TensorRT pick fp16 per layer, so the graph's fp32 islands are no longer
guaranteed). Nodes TensorRT does not take fall back to the CUDA EP, then the CPU.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import OptionError, opt
from ..precision import Precision
from ..outputs import CROP_SIZE, INPUT_NAME

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# what each provider needs available in the installed onnxruntime
NEEDS = {"cpu": ("cpu",), "cuda": ("cuda",), "tensorrt": ("tensorrt", "cuda")}


def parse_provider(text: str, field: str = "provider") -> str:
    """'cpu' | 'cuda' | 'tensorrt' (or 'trt'), any case; errors name the option `field`."""
    p = str(text).strip().lower()
    if p == "trt":
        p = "tensorrt"
    if p not in PROVIDERS:
        raise OptionError(field, text, f"expected one of {', '.join(PROVIDERS)}")
    return p


def check_available(provider: str, available, field: str = "provider") -> None:
    """One-line error (naming the option `field`) when the installed onnxruntime lacks a provider the request
    needs."""
    import onnxruntime as ort

    missing = [PROVIDERS[n] for n in NEEDS[provider] if PROVIDERS[n] not in available]
    if missing:
        raise OptionError(field, provider, f"{', '.join(missing)} not available in onnxruntime {ort.__version__} "
                          f"(available: {', '.join(available)}); install onnxruntime-gpu "
                          "(pip install 'smpler-deploy[gpu]', which replaces onnxruntime)")


def trt_profile_shapes(batches) -> dict[str, str]:
    """TensorRT EP profile from the batch sizes that will run: min = smallest, opt = max = largest (one engine
    covers every size asked for; opt at the largest, where the time goes)."""
    bs = sorted({int(b) for b in batches})
    if not bs or bs[0] < 1:
        raise OptionError("batch", ",".join(map(str, batches)), "expected positive batch sizes")
    shape = lambda b: f"{INPUT_NAME}:{b}x3x{CROP_SIZE}x{CROP_SIZE}"  # noqa: E731
    return {"trt_profile_min_shapes": shape(bs[0]), "trt_profile_opt_shapes": shape(bs[-1]),
            "trt_profile_max_shapes": shape(bs[-1])}


def provider_list(provider: str, *, precision: "Precision | None" = None, qdq: bool = False, batches=(1,),
                  cache_dir: str | Path | None = None, trt_fp16: bool = False, device_id: int = 0,
                  stream: int | None = None) -> list:
    """The `providers=` argument of `ort.InferenceSession` for a request.

    precision: the graph's `spec.Precision` (None: unknown); TensorRT refuses the int8 cpu layout's zero points.
    stream: a CUDA stream handle for ORT to run on, so the caller can bracket the work with CUDA events.
    """
    provider = parse_provider(provider)
    if provider != "tensorrt" and trt_fp16:
        raise OptionError("trt_fp16", None, f"applies to {opt('provider')} tensorrt (got {opt('provider')} {provider})")
    if provider == "cpu":
        return [PROVIDERS["cpu"]]
    cuda = {"device_id": str(device_id)}
    if stream is not None:
        cuda["user_compute_stream"] = str(int(stream))
    if provider == "cuda":
        return [(PROVIDERS["cuda"], cuda), PROVIDERS["cpu"]]
    if precision is not None and not precision.buildable:
        raise OptionError("provider", "tensorrt", "the int8-cpu graph uses ONNX Runtime's layout (non-zero zero "
                          f"points TensorRT refuses); run the int8 graph exported with {opt('target')} trt")
    if cache_dir is None:
        raise OptionError("provider", "tensorrt", f"needs an engine cache directory ({opt('trt_cache')} DIR)")
    cache = str(Path(cache_dir))
    trt = dict(cuda) | {
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache,
        "trt_fp16_enable": str(bool(trt_fp16)),
        "trt_int8_enable": str(bool(qdq)),  # explicit Q/DQ graphs need the int8 flag (scales come from the graph)
    } | trt_profile_shapes(batches)
    return [(PROVIDERS["tensorrt"], trt), (PROVIDERS["cuda"], cuda), PROVIDERS["cpu"]]
