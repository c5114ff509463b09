"""The metadata an exported graph carries (ONNX `metadata_props`), written in one place for every exporter: the
traced fp32/fp16 graphs and the calibrated int8 ones. Values are strings; anything else is stored as JSON."""

from __future__ import annotations

import json


def set_metadata(model, meta: dict) -> None:
    """Replace `model`'s metadata_props with `meta`."""
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v if isinstance(v, str) else json.dumps(v)
