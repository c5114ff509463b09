"""Install extras: cuda-python pinned by the CUDA major of the driver, onnxruntime-gpu in [gpu]."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _extra(name):
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {r.name: r.specifier for r in map(Requirement, extras[name])}


def test_cuda_python_pinned_by_cuda_major():
    cu12, cu13 = _extra("trt"), _extra("trt-cu13")
    # cuda-python 13.x needs a CUDA 13 (R580+) driver: a CUDA 12 host must never resolve to it
    assert "12.9.0" in cu12["cuda-python"] and "13.0.0" not in cu12["cuda-python"] and "12.5.0" not in cu12["cuda-python"]
    assert "13.4.4" in cu13["cuda-python"] and "12.9.0" not in cu13["cuda-python"] and "14.0.0" not in cu13["cuda-python"]
    assert "tensorrt-cu12" in cu12 and "tensorrt-cu13" in cu13  # TensorRT's libraries for the same CUDA major


def test_gpu_extra_is_onnxruntime_gpu():
    gpu = _extra("gpu")
    assert list(gpu) == ["onnxruntime-gpu"] and "1.20.0" in gpu["onnxruntime-gpu"]
    assert "uninstall -y onnxruntime" in (PYPROJECT.parent / "docs" / "gpu-install.md").read_text()
