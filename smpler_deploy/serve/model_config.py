"""Triton `config.pbtxt` files built as Triton's own ModelConfig protobuf (tritonclient ships it) and checked by
parsing the text back: a typo in a field name or enum is an error here, not when the server starts."""

from __future__ import annotations

from ..errors import SmplerError, opt

# numpy / manifest dtype names -> Triton data types
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
          "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "bfloat16": "TYPE_BF16"}


def _pb():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise SmplerError(f"{opt('format')} triton needs tritonclient (pip install 'smpler-deploy[serve]')") from None
    return model_config_pb2


def tensor(name: str, dtype: str, dims) -> dict:
    if dtype not in DTYPES:
        raise SmplerError(f"tensor {name}: dtype {dtype} has no Triton type (expected one of {', '.join(DTYPES)})")
    return {"name": name, "data_type": DTYPES[dtype], "dims": [int(d) for d in dims]}


def config_text(cfg: dict) -> str:
    """A config as a dict in ModelConfig's field names -> pbtxt (via the protobuf, so it is valid by construction)."""
    from google.protobuf import json_format, text_format

    pb = _pb()
    try:
        msg = json_format.ParseDict(cfg, pb.ModelConfig())
    except json_format.ParseError as e:
        raise SmplerError(f"model {cfg.get('name')}: invalid Triton model config ({e})") from None
    return text_format.MessageToString(msg)


def parse_config(text: str, where: str = "config.pbtxt"):
    """Parse pbtxt with Triton's ModelConfig protobuf; a one-line error naming `where` if it does not parse."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb().ModelConfig())
    except text_format.ParseError as e:
        raise SmplerError(f"{where}: not a valid Triton model config ({e})") from None
