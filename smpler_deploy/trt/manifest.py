"""`NAME.engine.json` beside every engine: what it was built from, for what, and how.

The runtime reads it before touching the engine so a mismatch (other file, other TensorRT version, other GPU)
is a one-line error instead of a `deserialize_cuda_engine` returning None, or worse, a wrong answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import SmplerError, opt
from ..fileio import sha256_file, write_text_atomic

SCHEMA = 1
FLAVOUR_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
# Sections every manifest has; `read_manifest` refuses files without them.
REQUIRED = ("schema", "engine", "source", "trt", "target", "profiles", "inputs", "outputs", "plugins", "build")


# Value types of the fields the runtime and the checks read: a hand-edited or foreign file is refused in one line
# naming the field, instead of a TypeError deep in a session. "?" = may be null; "list[int]" = list of ints.
FIELD_TYPES = {
    "schema": "int", "variant": "str?", "precision": "str?",
    "engine": "dict", "engine.file": "str", "engine.sha256": "str", "engine.size": "int",
    "source": "dict", "trt": "dict", "trt.flavour": "str", "trt.version": "str",
    "target": "dict", "target.sms": "list[int]", "target.hardware_compatibility_level": "str?",
    "profiles": "list[dict]", "inputs": "list[dict]", "outputs": "list[dict]", "plugins": "list[dict]",
    "build": "dict", "build.options": "dict?", "build.options.version_compatible": "bool?",
}
TENSOR_TYPES = {"name": "str", "shape": "list[int]", "dtype": "str"}
_PY = {"int": int, "str": str, "dict": dict, "list": list, "bool": bool}
_WORDS = {"int": "an integer", "str": "a string", "dict": "an object", "bool": "true or false",
          "list[int]": "a list of integers", "list[dict]": "a list of objects"}


def _is(value, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    if kind.startswith("list["):
        return isinstance(value, list) and all(_is(v, kind[5:-1]) for v in value)
    if kind == "int" and isinstance(value, bool):
        return False
    return isinstance(value, _PY[kind])


def _missing(d: dict, dotted: str):
    node = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return True, None
        node = node[part]
    return False, node


def check_field_types(data: dict, path) -> None:
    """One-line SmplerError naming the file and the first field whose value has the wrong type."""
    def bad(field, value, kind):
        shown = json.dumps(value)[:40]
        want = _WORDS.get(kind.rstrip("?"), kind) + (" or null" if kind.endswith("?") else "")
        raise SmplerError(f"{path}: field {field} is {shown}, expected {want}; rebuild the engine")

    for field, kind in FIELD_TYPES.items():
        absent, value = _missing(data, field)
        if absent:
            if kind.endswith("?") or "." in field and _missing(data, field.rsplit(".", 1)[0])[1] is None:
                continue
            raise SmplerError(f"{path}: field {field} is missing; rebuild the engine")
        if not _is(value, kind):
            bad(field, value, kind)
    for section in ("inputs", "outputs"):
        for i, t in enumerate(data[section]):
            for key, kind in TENSOR_TYPES.items():
                if not _is(t.get(key), kind):
                    bad(f"{section}[{i}].{key}", t.get(key), kind)
    for i, prof in enumerate(data["profiles"]):
        for name, shapes in prof.items():
            for key in ("min", "opt", "max"):
                value = shapes.get(key) if isinstance(shapes, dict) else None
                if not _is(value, "list[int]"):
                    bad(f"profiles[{i}].{name}.{key}", value, "list[int]")


def manifest_path(engine_path: str | os.PathLike) -> Path:
    return Path(str(engine_path) + ".json")


def layers_path(engine_path: str | os.PathLike) -> Path:
    """Full per-layer records (can be long), kept out of the manifest itself."""
    return Path(str(engine_path) + ".layers.json")


def write_manifest(engine_path: str | os.PathLike, manifest: dict) -> Path:
    """`NAME.engine.json` beside the engine, atomically (the one writer: the builder's)."""
    return write_text_atomic(manifest_path(engine_path), json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(engine_path: str | os.PathLike) -> dict:
    path = manifest_path(engine_path)
    if not path.exists():
        raise SmplerError(
            f"{engine_path}: no manifest {path.name} beside the engine (build engines with smpler-export --format engine)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SmplerError(f"{path}: unreadable manifest ({e.__class__.__name__}); rebuild the engine")
    missing = [k for k in REQUIRED if k not in data] if isinstance(data, dict) else list(REQUIRED)
    if missing:
        raise SmplerError(f"{path}: manifest lacks {', '.join(missing)}; rebuild the engine")
    check_field_types(data, path)
    if data["schema"] > SCHEMA:
        raise SmplerError(f"{path}: manifest schema {data['schema']} is newer than this smpler-deploy ({SCHEMA})")
    return data


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(v).split(".") if x.isdigit())


def _versions_compatible(built: str, running: str, version_compatible: bool) -> bool:
    """Exact version, or (version-compatible engines) the same major at the same or a later version."""
    if version_compatible:
        b, r = _version_tuple(built), _version_tuple(running)
        return bool(b and r) and b[0] == r[0] and r >= b
    return _version_tuple(built) == _version_tuple(running)


def check_engine_file(manifest: dict, engine_path: str | os.PathLike, where: str | None = None,
                      engine_sha256: str | None = None) -> None:
    """Refuse an engine file that is not the one its manifest describes: a truncated, empty or replaced engine.
    `where` names it in errors (default: the file name); `engine_sha256` skips re-hashing when already known."""
    where = where or Path(engine_path).name
    try:
        size = os.stat(engine_path).st_size
        digest = engine_sha256 or sha256_file(engine_path)
    except OSError as e:
        raise SmplerError(f"{where}: cannot read ({e.strerror})") from None
    if digest != manifest["engine"]["sha256"]:
        sizes = f": {size} bytes, the manifest says {manifest['engine']['size']}" \
            if size != manifest["engine"]["size"] else ""
        raise SmplerError(f"{where}: sha256 differs from its manifest {manifest_path(engine_path).name} "
                          f"(corrupt, truncated or replaced engine{sizes}); rebuild it")


def check_manifest(
    manifest: dict,
    engine_path: str | os.PathLike,
    trt_version: str,
    device_sm: int | None,
    flavour: str | None = None,
    engine_sha256: str | None = None,
) -> None:
    """Refuse an engine that does not match its manifest, this TensorRT, or this GPU. Pure except for hashing.

    `device_sm=None` skips the GPU check (unknown device); `engine_sha256` skips re-hashing when already known.
    """
    name = Path(engine_path).name
    built = manifest["trt"]
    title = FLAVOUR_TITLES.get(built["flavour"], built["flavour"])
    if flavour is not None and flavour != built["flavour"]:
        raise SmplerError(f"{name}: built with {title}, but loading with {opt('flavour')} {flavour}; "
                          f"use {opt('flavour')} {built['flavour']}")
    check_engine_file(manifest, engine_path, engine_sha256=engine_sha256)
    vc = bool(manifest["build"].get("options", {}).get("version_compatible"))
    if not _versions_compatible(built["version"], trt_version, vc):
        raise SmplerError(
            f"{name}: built with {title} {built['version']}, this is {title} {trt_version}; "
            "rebuild the engine with this version"
        )
    if device_sm is None:
        return
    target = manifest["target"]
    sms = [int(s) for s in target.get("sms") or []]
    hcl = (target.get("hardware_compatibility_level") or "none").lower()
    if hcl == "ampere_plus" and device_sm >= 80:
        return
    if hcl == "same_compute_capability" and device_sm in sms:
        return
    if sms and device_sm not in sms:
        rtx = built["flavour"] == "tensorrt-rtx"
        fix = f"rebuild with {opt('sms')} {device_sm}" if rtx else "rebuild it on this device"
        built_for = ", ".join(f"SM{s}" for s in sms)
        raise SmplerError(f"{name}: built for {built_for}, this GPU is SM{device_sm}; {fix}")
