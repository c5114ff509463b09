"""The `Session` protocol every backend implements (torch, onnxruntime, tensorrt).

A session takes a pre-processed batch (float32 [B,3,224,224], ImageNet-normalized RGB; see
`smpler_deploy.preprocess`) and returns an `SMPLOutput` of float32 numpy arrays. Pre- and post-processing live
outside the sessions so every backend shares them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import SmplerError
from ..outputs import CROP_SIZE, OUTPUT_NAMES, SMPLOutput


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
    if len(arr) == 0:
        raise SmplerError(f"{where}: empty batch [0,3,{CROP_SIZE},{CROP_SIZE}]; expected at least one image")
    if not np.issubdtype(arr.dtype, np.floating):  # raw pixels (uint8) would run as garbage; normalize first
        raise SmplerError(f"{where}: expected float32 values (ImageNet-normalized RGB: preprocess.normalize), got "
                          f"{arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = nonfinite_items(arr)
    if bad:  # refused before any backend runs: a NaN pixel would otherwise spoil (or crash) the whole batch
        raise NonFiniteError(f"{where}: non-finite values (NaN/Inf) in image{'s' if len(bad) > 1 else ''} "
                             f"{_indices(bad)} of the batch of {len(arr)}; drop or fix them", bad)
    return arr


class NonFiniteError(SmplerError):
    """NaN/Inf in a batch; `indices` are the batch items concerned, so a caller can drop them and go on."""

    def __init__(self, message: str, indices: list[int], output: str | None = None):
        super().__init__(message)
        self.indices = list(indices)
        self.output = output


def nonfinite_items(arr) -> list[int]:
    """Indices along the first axis whose entries are not all finite."""
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
        return []
    return np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)).tolist()


def _indices(idx: list[int], n: int = 8) -> str:
    return ", ".join(map(str, idx[:n])) + (f" (+{len(idx) - n} more)" if len(idx) > n else "")


def check_outputs(out: SMPLOutput, where: str) -> SMPLOutput:
    """Every session's outputs pass here: NaN/Inf raise, naming the output and the batch items."""
    for name, arr in zip(OUTPUT_NAMES, out):
        bad = nonfinite_items(arr)
        if bad:
            raise NonFiniteError(f"{where}: non-finite values (NaN/Inf) in output {name} for batch "
                                 f"item{'s' if len(bad) > 1 else ''} {_indices(bad)}", bad, name)
    return out
