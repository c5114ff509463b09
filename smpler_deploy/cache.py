"""On-disk cache of what the toolkit builds for itself: the default model's state and the stand-in body model.

Both are deterministic but cost seconds to make (the default model's BatchNorm re-estimation runs the backbone
on 16 crops), so every process used to pay for them again. An entry is one `.npz` file (read with
`allow_pickle=False`: no code runs) with three kinds of members: `__key__` (JSON: everything the arrays depend
on), `__index__` (JSON: name, dtype, shape and offset of each array) and one flat `blob_DTYPE` per dtype. One
file per name: a stale entry (its key differs), a foreign one (other arrays or shapes) or a corrupt one is
rebuilt and replaced, with one line on stderr saying so. Entries are written atomically (`fileio.atomic_path`); a
cache directory that cannot be written costs one warning line and the command goes on without it.

Location: $SMPLER_DEPLOY_CACHE, else $XDG_CACHE_HOME/smpler_deploy/models, else ~/.cache/smpler_deploy/models.
SMPLER_DEPLOY_CACHE=off (or 0, no, false, none) disables it; deleting the directory clears it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ENV = "SMPLER_DEPLOY_CACHE"
_OFF = {"0", "off", "no", "false", "none"}
_KEY, _INDEX, _BLOB = "__key__", "__index__", "blob_"  # the entry's members: key, index, one blob per dtype


def cache_dir() -> Path | None:
    """Where entries live; None when the cache is switched off."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smpler_deploy" / "models"


def source_digest(*files: str | os.PathLike) -> str:
    """sha256 over the named source files (names and contents): a key part that goes stale with the code."""
    h = hashlib.sha256()
    for f in sorted(Path(f) for f in files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_environment(*dists: str) -> dict[str, str]:
    """Key part for numbers computed by the named libraries: their installed major.minor versions (read without
    importing them) and the CPU architecture (a home directory may be shared by machines of another kind)."""
    import platform
    from importlib import metadata

    out = {"machine": platform.machine()}
    for d in dists:
        try:
            out[d] = ".".join(metadata.version(d).split(".")[:2])
        except metadata.PackageNotFoundError:
            out[d] = "absent"
    return out


@dataclass(frozen=True)
class Entry:
    name: str  # file stem, e.g. "default-smpler-seed0"
    what: str  # for messages, e.g. "default model"
    key: dict  # JSON-able; every input the arrays depend on


Arrays = dict[str, np.ndarray]


def cached_arrays(entry: Entry, build: Callable[[], Arrays], check: Callable[[Arrays], str | None]) -> Arrays:
    """`entry`'s arrays from the cache, else `build()` (stored for the next process).

    `check(arrays)` returns None for arrays this version can use, else why not (wrong names, shapes, dtypes)."""
    d = cache_dir()
    if d is None:
        return build()
    path = d / f"{entry.name}.npz"
    if path.exists():
        arrays, why = _read(path, entry.key)
        if arrays is not None:
            why = check(arrays)
            if why is None:
                return arrays
            why = f"holds arrays this version does not use ({why})"
        _say(f"cached {entry.what} {path} {why}; rebuilding it")
    arrays = build()
    _write(path, entry, arrays)
    return arrays


def _say(line: str) -> None:
    print(f"smpler-deploy: {line}", file=sys.stderr, flush=True)


def _read(path: Path, key: dict) -> tuple[Arrays | None, str]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if _KEY not in f.files or _INDEX not in f.files:
                return None, "is not a cache entry (no key)"
            found = json.loads(bytes(f[_KEY]).decode("utf-8"))
            if found != key:
                return None, f"is stale ({_changed(found, key)})"
            return _unpack(json.loads(bytes(f[_INDEX]).decode("utf-8")), {k: f[k] for k in f.files}), ""
    except (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, zipfile.BadZipFile,
            UnicodeDecodeError) as e:
        text = str(e).splitlines()[0][:120] if str(e) else ""
        return None, f"is unreadable ({e.__class__.__name__}{': ' + text if text else ''})"


def _pack(arrays: Arrays) -> tuple[list, Arrays]:
    """All arrays of one dtype laid end to end in one flat array, with an index (name, dtype, shape, offset):
    the default model's 2,500 arrays as zip members of their own read about five times slower (measured here)."""
    index, parts, sizes = [], {}, {}
    for name, a in arrays.items():
        dt = str(a.dtype)
        index.append([name, dt, list(a.shape), sizes.get(dt, 0)])
        parts.setdefault(dt, []).append(np.ascontiguousarray(a).reshape(-1))
        sizes[dt] = sizes.get(dt, 0) + a.size
    return index, {f"{_BLOB}{dt}": np.concatenate(p) for dt, p in parts.items()}


def _unpack(index: list, blobs: Arrays) -> Arrays:
    out = {}
    for name, dt, shape, start in index:
        blob = blobs[f"{_BLOB}{dt}"]
        n = int(np.prod(shape, dtype=np.int64))
        if str(blob.dtype) != dt or not 0 <= start <= blob.size - n:
            raise ValueError(f"index entry {name} lies outside the stored arrays")
        out[name] = blob[start:start + n].reshape(shape)
    return out


def _changed(found, key: dict) -> str:
    if not isinstance(found, dict):
        return "no key"
    diff = [k for k in sorted(set(found) | set(key)) if found.get(k) != key.get(k)]
    k = diff[0]
    short = lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v  # noqa: E731  (a digest)
    return f"{k}: {short(found.get(k))} -> {short(key.get(k))}" + (f", +{len(diff) - 1} more" if len(diff) > 1 else "")


def _write(path: Path, entry: Entry, arrays: Arrays) -> None:
    """Store the entry atomically; any failure is one warning line, never an error of the command.

    In a thread of its own: fileio's transactions are per thread, and this file must not join (and be rolled back
    with) the outputs of the command that happens to load the model."""
    from .errors import SmplerError
    from .fileio import atomic_path

    index, blobs = _pack(arrays)
    payload = {**blobs, _KEY: _json_bytes(entry.key), _INDEX: _json_bytes(index)}
    failed: list[str] = []

    def store():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # np.savez's layout, written here so that a failed write (a full disk) closes the zip file at once:
            # np.savez leaves it to the garbage collector, which then prints a traceback about the closed file.
            with atomic_path(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
                for name, a in payload.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, a, allow_pickle=False)
        except OSError as e:
            failed.append(e.strerror or e.__class__.__name__)
        except SmplerError as e:  # e.g. the lock file cannot be created, or another process writes this entry
            failed.append(str(e).split(": ", 1)[-1])

    t = threading.Thread(target=store, name="smpler-cache-write")
    t.start()
    t.join()
    if failed:
        _say(f"cannot cache the {entry.what} in {path.parent} ({failed[0]}); continuing without the cache "
             f"({ENV}=off skips it, {ENV}=DIR moves it)")


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), np.uint8)


def spec_mismatch(expected: dict[str, tuple[tuple[int, ...], str]], arrays: Arrays) -> str | None:
    """None when `arrays` has exactly the expected names, shapes and dtypes, else the first difference."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        return f"{len(missing)} missing, e.g. {missing[0]}"
    extra = sorted(set(arrays) - set(expected))
    if extra:
        return f"{len(extra)} unexpected, e.g. {extra[0]}"
    for k in sorted(expected):
        shape, dtype = expected[k]
        a = arrays[k]
        if tuple(a.shape) != tuple(shape) or str(a.dtype) != dtype:
            return f"{k} is {a.dtype}{list(a.shape)}, expected {dtype}{list(shape)}"
    return None
