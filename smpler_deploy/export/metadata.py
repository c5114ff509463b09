"""The metadata an exported graph carries (ONNX `metadata_props`), written and read in one place: every exporter
(the traced fp32/fp16 graphs and the calibrated int8 ones) writes it here, and every reader of an ONNX file's
header (the sessions, the artifact checks, the exporters) reads it here. Values are strings; anything else is
stored as JSON, booleans as "true"/"false"."""

from __future__ import annotations

import json

from ..errors import SmplerError


def set_metadata(model, meta: dict) -> None:
    """Replace `model`'s metadata_props with `meta`."""
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v if isinstance(v, str) else json.dumps(v)


def read_header(path, where: str | None = None):
    """An ONNX file's ModelProto without its external weights (graph, initializer descriptions, metadata).
    One-line SmplerError naming `where` (default: the path) when the file is missing or not ONNX."""
    import onnx

    where = where or str(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise SmplerError(f"{where}: file not found") from None
    except Exception as e:  # noqa: BLE001 - any parse failure means "not an ONNX file"
        raise SmplerError(f"{where}: not a readable ONNX model ({e.__class__.__name__})") from None


def metadata(model) -> dict[str, str]:
    """A ModelProto's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path, where: str | None = None) -> dict[str, str]:
    return metadata(read_header(path, where))


def meta_bool(meta: dict[str, str], key: str) -> bool | None:
    """A boolean the exporter wrote ("true"/"false"); None when the graph does not carry `key`."""
    if key not in meta:
        return None
    return str(meta[key]).strip().lower() in ("1", "true", "yes")
