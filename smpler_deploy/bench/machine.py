"""What the benchmark ran on: CPU, threads, library versions, GPU/driver, and a measured fp32 GEMM peak.

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


def gemm_peak_gflops(threads: int | None = None, n: int = 1024, seconds: float = 0.5) -> float:
    """Best fp32 GEMM rate (GFLOP/s, 2n³ per matmul) over repeated n×n matmuls; torch if present, else numpy.
    A practical ceiling to set the model's achieved GFLOP/s against, not a vendor peak."""
    try:
        import torch

        prev = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm = lambda: torch.mm(a, b)  # noqa: E731
    except ImportError:
        import numpy as np

        prev, a, b = None, np.random.rand(n, n).astype("f4"), np.random.rand(n, n).astype("f4")
        mm = lambda: a @ b  # noqa: E731
    try:
        mm()  # warm-up (thread pool, caches)
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            mm()
            best = min(best, time.perf_counter() - t0)
        return 2.0 * n**3 / best / 1e9
    finally:
        if prev is not None:
            import torch

            torch.set_num_threads(prev)


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
        "gemm_fp32_peak_gflops": round(gemm_peak_gflops(threads), 1) if measure_gemm else None,
    }
