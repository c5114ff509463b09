"""The `Session` protocol every backend implements (torch, onnxruntime, tensorrt).

A session takes a pre-processed batch (float32 [B,3,224,224], ImageNet-normalized RGB; see
`smpler_deploy.preprocess`) and returns an `SMPLOutput` of float32 numpy arrays. Pre- and post-processing live
outside the sessions so every backend shares them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import SmplerError
from ..outputs import CROP_SIZE, SMPLOutput


@runtime_checkable
class Session(Protocol):
    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"

    def infer(self, images: np.ndarray) -> SMPLOutput: ...

    def close(self) -> None: ...


def check_images(images, where: str = "images") -> np.ndarray:
    """Validate a model input batch; one-line error naming what was expected."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2:] != (CROP_SIZE, CROP_SIZE):
        raise SmplerError(
            f"{where}: expected a float32 batch [B,3,{CROP_SIZE},{CROP_SIZE}] (RGB, ImageNet-normalized), "
            f"got shape {list(arr.shape)}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)
