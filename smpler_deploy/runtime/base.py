"""The `Session` base class every backend subclasses (torch, onnxruntime, tensorrt; the bench's official-repo).

A session takes a pre-processed batch (float32 [B,3,224,224], ImageNet-normalized RGB; see
`smpler_deploy.preprocess`) and returns an `SMPLOutput` of float32 numpy arrays. Pre- and post-processing live
outside the sessions so every backend shares them. What a caller may read is declared here, typed: `info`,
`precision`, `last_device_ms`, `max_batch`, `cuda_graphs`, `smpl_layer`. A backend's own extras (the TensorRT
session's manifest and buffers, the torch session's model) are for code that opened that backend itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SmplerError
from ..outputs import CROP_SIZE, OUTPUT_NAMES, SMPLOutput
from ..precision import FP32, Precision
from .graphs import GRAPHS_OFF, GraphState

if TYPE_CHECKING:
    from ..body.layer import SMPLHandler


@dataclass(frozen=True)
class SessionInfo:
    """What a session knows about the model it runs, one name and type per fact. None: the artifact does not
    record it (an ONNX graph without smpler-deploy metadata; an engine, whose manifest keeps no model facts)."""

    variant: str | None = None  # smpler | smpler-l
    untrained: bool | None = None  # the default (untrained) weights, not an official checkpoint
    standin_body: bool | None = None  # the generated stand-in body model, not SMPL
    checkpoint: str | None = None  # the checkpoint the weights came from (None: the default model)
    checkpoint_sha256: str | None = None
    body_model: str | None = None  # where the body model came from
    device: str = "cpu"  # where it computes: cpu | cuda | cuda:N
    providers: tuple[str, ...] = ()  # onnxruntime: the execution providers in use, the main one first
    fp32_parts: tuple[str, ...] = ()  # torch fp16/bf16: what stays float32
    compiled: bool = False  # torch: the forward runs through torch.compile


class Session:
    """Subclasses set `backend`, `where`, `precision`, `info` (and what else applies) and implement `_run` (a
    checked batch -> SMPLOutput) and `_release`. `infer` checks the batch and the outputs for every backend and
    refuses to run after `close`; a session is a context manager that closes on exit."""

    backend: str = ""  # torch | onnxruntime | tensorrt (`factory.BACKENDS`) | official-repo (bench baseline)
    where: str = "session"  # what its errors name: "torch session", "onnxruntime session", the engine file
    # What it computes in (a graph's, or torch's fp32/fp16/bf16; reports write `.name`); None: a graph whose
    # metadata names a precision smpler-deploy does not know
    precision: Precision | None = FP32
    info: SessionInfo = SessionInfo()
    last_device_ms: float | None = None  # CUDA-event time of the last infer's compute alone (no copies); None on CPU
    max_batch: int | None = None  # most images one infer takes (TensorRT: its profile's maximum); None = unbounded
    closed: bool = False

    @property
    def cuda_graphs(self) -> GraphState:
        return GRAPHS_OFF

    @property
    def smpl_layer(self) -> SMPLHandler | None:
        """The SMPL layer of the model the session runs (mesh faces, re-posing), or None for a graph."""
        return None

    def infer(self, images) -> SMPLOutput:
        if self.closed:
            raise SmplerError(f"{self.where}: session is closed (infer after close); open a new one")
        return check_outputs(self._run(check_images(images)), self.where)

    def _run(self, images: np.ndarray) -> SMPLOutput:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the session holds; idempotent."""
        if not self.closed:
            self.closed = True
            self._release()

    def _release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
