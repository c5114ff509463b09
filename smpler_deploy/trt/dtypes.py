"""The one map of TensorRT `DataType` to numpy: the runtime's buffers and the manifest's dtype names read it."""

from __future__ import annotations

import numpy as np

from ..errors import SmplerError

# TensorRT DataType member name -> dtype name. BF16/FP8 have no numpy type (the manifest still names them; an
# engine I/O of that type is refused: our graphs keep I/O in fp32, precision lives inside the graph).
NAMES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
         "UINT8": "uint8", "BF16": "bfloat16", "FP8": "float8e4m3"}
NO_NUMPY = ("BF16", "FP8")


def _member(trt_dtype) -> str:
    """"FLOAT", from a DataType member, "DataType.FLOAT" or "FLOAT"."""
    return str(getattr(trt_dtype, "name", trt_dtype)).rsplit(".", 1)[-1].upper()


def dtype_name(trt_dtype) -> str:
    """The manifest's spelling (float32, float16, ..., bfloat16); an unknown member lower-cased."""
    n = _member(trt_dtype)
    return NAMES.get(n, n.lower())


def np_dtype(trt_dtype) -> np.dtype:
    n = _member(trt_dtype)
    if n not in NAMES or n in NO_NUMPY:
        raise SmplerError(f"engine I/O dtype {n} has no numpy equivalent; export with float32 I/O")
    return np.dtype(NAMES[n])
