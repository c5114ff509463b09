"""`TritonPythonModel` for Triton's Python backend; each python model's `model.py` in the repository imports it.

One class, three stages chosen by the config parameter `stage`: `crop` (pre-processing), `uncrop`
(post-processing) and `session` (the project's ONNX Runtime session on the version directory's model.onnx, for
Triton builds without the onnxruntime backend, such as the server PyTriton bundles).

Tensors cross the backend boundary through DLPack, not `as_numpy()` / `Tensor(name, ndarray)`: the Python
backend stubs PyTriton 0.7 bundles are built against numpy 1.x and, under numpy 2, read and write the arrays'
data wrongly (zeros or nothing) without an error. DLPack works with either numpy.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from ..errors import SmplerError
from ..outputs import OUTPUT_NAMES
from . import handlers


class _DLPack:
    """Gives numpy's `from_dlpack` the capsule of a Triton tensor (CPU memory)."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, **_):
        return self.t.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


def as_numpy(t) -> np.ndarray:
    return np.from_dlpack(_DLPack(t)).copy()  # the request's memory is released after execute returns


# The stub marks a consumed capsule "used_dlpack"; the DLPack protocol (and numpy's capsule destructor) expects
# "used_dltensor", so numpy would report "PyCapsule_GetPointer called with incorrect name" for every output
# (harmless: it then frees nothing, the stub owns the tensor). Renaming to the protocol's name ends that noise.
_USED = b"used_dltensor"  # module-level: the capsule keeps a pointer to this name


@functools.cache  # argtypes set once, not per output tensor
def _capsule_api():
    import ctypes

    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_SetName.restype = ctypes.c_int
    api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api


def to_tensor(pb_utils, name: str, arr: np.ndarray):
    cap = np.ascontiguousarray(arr).__dlpack__()
    t = pb_utils.Tensor.from_dlpack(name, cap)
    api = _capsule_api()
    if api.PyCapsule_GetName(cap) == b"used_dlpack":
        api.PyCapsule_SetName(cap, _USED)
    return t


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.stage = params.get("stage")
        self.session = None
        if self.stage == "session":
            from ..runtime.ort_session import OnnxRuntimeSession

            path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
            threads = int(params.get("threads", "0")) or None
            self.session = OnnxRuntimeSession(path, threads=threads)
        elif self.stage not in ("crop", "uncrop"):
            raise SmplerError(f"{cfg.get('name')}: parameter stage {self.stage!r}: expected crop, uncrop or session")

    def _error(self, e: Exception):
        return self.pb.InferenceResponse(error=self.pb.TritonError(str(e)))

    def _inputs(self, request, *names):
        return [as_numpy(self.pb.get_input_tensor_by_name(request, n)) for n in names]

    def execute(self, requests):
        if self.stage == "session":
            batches = [self._inputs(r, "images")[0] for r in requests]
            responses = []
            for res in handlers.infer_batch(self.session, batches):
                if isinstance(res, Exception):
                    responses.append(self._error(res))
                else:
                    responses.append(self.pb.InferenceResponse(
                        [to_tensor(self.pb, n, res[n]) for n in OUTPUT_NAMES]))
            return responses
        responses = []
        for r in requests:
            try:
                if self.stage == "crop":
                    images, boxes = self._inputs(r, "image", "box")
                    pairs = [handlers.crop_one(im, b) for im, b in zip(images, boxes)]
                    out = {"images": np.stack([p[0] for p in pairs]), "crop": np.stack([p[1] for p in pairs])}
                else:
                    joints2d, crops = self._inputs(r, "smpl_joints2d", "crop")
                    out = {"joints2d_image": np.stack([handlers.uncrop_joints(j, c) for j, c in zip(joints2d, crops)])}
                responses.append(self.pb.InferenceResponse([to_tensor(self.pb, k, v) for k, v in out.items()]))
            except SmplerError as e:
                responses.append(self._error(e))
        return responses

    def finalize(self):
        if self.session is not None:
            self.session.close()
