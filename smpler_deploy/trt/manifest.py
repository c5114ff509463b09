"""`NAME.engine.json` beside every engine: what it was built from, for what, and how.

The runtime reads it before touching the engine so a mismatch (other file, other TensorRT version, other GPU)
is a one-line error instead of a `deserialize_cuda_engine` returning None, or worse, a wrong answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import SmplerError
from ..fileio import sha256_file, write_text_atomic

SCHEMA = 1
FLAVOUR_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
# Sections every manifest has; `read_manifest` refuses files without them.
REQUIRED = ("schema", "engine", "source", "trt", "target", "profiles", "inputs", "outputs", "plugins", "build")


def manifest_path(engine_path: str | os.PathLike) -> Path:
    return Path(str(engine_path) + ".json")


def layers_path(engine_path: str | os.PathLike) -> Path:
    """Full per-layer records (can be long), kept out of the manifest itself."""
    return Path(str(engine_path) + ".layers.json")


def write_manifest(engine_path: str | os.PathLike, manifest: dict) -> Path:
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
        raise SmplerError(f"{name}: built with {title}, but loading with --trt {flavour}; use --trt {built['flavour']}")
    digest = engine_sha256 or sha256_file(engine_path)
    if digest != manifest["engine"]["sha256"]:
        raise SmplerError(
            f"{name}: sha256 differs from its manifest {manifest_path(engine_path).name} "
            "(corrupt, truncated or replaced engine); rebuild it"
        )
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
        fix = f"rebuild with --sm {device_sm}" if built["flavour"] == "tensorrt-rtx" else "rebuild it on this device"
        built_for = ", ".join(f"SM{s}" for s in sms)
        raise SmplerError(f"{name}: built for {built_for}, this GPU is SM{device_sm}; {fix}")
