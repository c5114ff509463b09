"""What the benchmark ran on: CPU, threads, library versions, GPU/driver, and measured fp32 and int8 GEMM peaks.

Versions come from package metadata (no import), so probing tensorrt/triton costs nothing and cannot fail on a
machine without a GPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata

# distribution names probed for versions (first found wins per key)
LIBRARIES = {
    "torch": ("torch",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnx": ("onnx",),
    "numpy": ("numpy",), "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    "tensorrt_rtx": ("tensorrt-rtx", "tensorrt_rtx"), "triton": ("triton",), "polygraphy": ("polygraphy",),
}


def library_versions() -> dict[str, str | None]:
    out = {}
    for key, dists in LIBRARIES.items():
        out[key] = None
        for d in dists:
            try:
                out[key] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects cgroup/taskset limits, unlike cpu_count
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info() -> list[dict]:
    """GPUs from nvidia-smi (name, driver, memory); [] when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        res = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in res.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "compute_capability": parts[3] if len(parts) > 3 else None})
    return gpus


def _best_rate(mm, n: int, seconds: float) -> float:
    mm()  # warm-up (thread pool, caches, packing)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _torch_gemm(threads, n, seconds):
    import torch

    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        return _best_rate(lambda: torch.mm(a, b), n, seconds)
    finally:
        torch.set_num_threads(prev)


def _ort_session(node, inputs: dict, out_type, threads):
    """A one-node ONNX Runtime CPU session; inputs: name -> numpy array (n x n)."""
    import onnxruntime as ort
    from onnx import helper
    from onnx.helper import np_dtype_to_tensor_dtype

    vi = lambda name, t, shape: helper.make_tensor_value_info(name, t, shape)  # noqa: E731
    ins = [vi(k, np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for k, v in inputs.items()]
    n = next(iter(inputs.values())).shape[0]
    g = helper.make_graph([node], "gemm", ins, [vi("c", out_type, [n, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort_gemm(threads, n, seconds):
    import numpy as np
    from onnx import TensorProto, helper

    feeds = {"a": np.random.rand(n, n).astype("f4"), "b": np.random.rand(n, n).astype("f4")}
    sess = _ort_session(helper.make_node("MatMul", ["a", "b"], ["c"]), feeds, TensorProto.FLOAT, threads)
    return _best_rate(lambda: sess.run(None, feeds), n, seconds)


def _ort_gemm_int8(threads, n, seconds):
    """MLAS's integer GEMM through MatMulInteger, uint8 activations x int8 weights (u8s8) -> int32: the kernel
    family the int8-cpu graphs' fused QLinearConv / QLinearMatMul nodes run (ORT's quantizer: QUInt8 activations,
    QInt8 weights)."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    sess = _ort_session(helper.make_node("MatMulInteger", ["a", "b"], ["c"]), feeds, TensorProto.INT32, threads)
    return _best_rate(lambda: sess.run(None, feeds), n, seconds)


def gemm_rates(threads: int | None = None, n: int = 2048, seconds: float = 0.6) -> dict[str, float]:
    """Best fp32 GEMM rate (GFLOP/s, 2n^3 per matmul) of each library's own kernels: torch's and ONNX Runtime's
    MLAS differ a lot on some CPUs (here MLAS uses AVX-512, torch's sgemm does not), so both are measured."""
    rates = {}
    for name, fn in (("torch", _torch_gemm), ("onnxruntime", _ort_gemm)):
        try:
            rates[name] = round(fn(threads, n, seconds), 1)
        except Exception:  # noqa: BLE001 - a missing library just has no rate
            continue
    return rates


def gemm_int8_rates(threads: int | None = None, n: int = 2048, seconds: float = 0.6) -> dict[str, float]:
    """Best int8 GEMM rate (GOP/s, 2n^3 integer multiply-adds per matmul), measured as the fp32 one: the ceiling
    the int8-cpu cells (ONNX Runtime only) are held against."""
    try:
        return {"onnxruntime": round(_ort_gemm_int8(threads, n, seconds), 1)}
    except Exception:  # noqa: BLE001 - no ONNX Runtime: no rate
        return {}


def machine_info(threads: int | None = None, measure_gemm: bool = True) -> dict:
    """The `machine` block of report.json."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "libraries": library_versions(),
        "gpus": gpu_info(),
        **_gemm_fields(threads, measure_gemm),
    }


_PEAKS = (("gemm_fp32_peak_gflops", "gemm_fp32_gflops_by_library", gemm_rates),
          ("gemm_int8_peak_gops", "gemm_int8_gops_by_library", gemm_int8_rates))


def _measure_peaks(machine: dict, threads, n: int = 2048, seconds: float = 0.6) -> dict:
    """One measuring window: each library's rate, the best of it and what `machine` already holds."""
    for key, by, rates_fn in _PEAKS:
        best = dict(machine.get(by) or {})
        for lib, rate in rates_fn(threads, n, seconds).items():
            best[lib] = max(rate, best.get(lib, 0.0))
        machine[by], machine[key] = best, (max(best.values()) if best else None)
    return machine


def refresh_gemm_peaks(machine: dict, threads: int | None = None, n: int = 2048, seconds: float = 0.6) -> dict:
    """Measure the GEMM rates again (after the cells) and keep each library's best of both windows: a peak taken in
    a slow spell of a shared host would make every cell's share of it read high (over 100%)."""
    if machine.get("gemm_fp32_peak_gflops") is None:
        return machine  # not measured (measure_gemm=False): nothing to refresh
    _measure_peaks(machine, threads, n, seconds)
    machine["gemm_method"] = f"best of {seconds} s of {n}^3 GEMMs before and after the cells, per library"
    return machine


def _gemm_fields(threads, measure: bool) -> dict:
    if not measure:
        return {key: None for key, _, _ in _PEAKS} | {by: {} for _, by, _ in _PEAKS}
    return _measure_peaks({}, threads)
