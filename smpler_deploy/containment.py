"""Paths named inside input files (ONNX external-data locations, kernel-index binaries, dataset image names) are
read only from inside the folder they are relative to: an absolute path, a `..` component, or a name that
resolves (through symbolic links) outside that folder is refused in one line naming the file and the entry.

`contained` is the one check; every reader of such a path goes through it (or through `onnx_external_files`,
which applies it to every external-data location of a graph).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import SmplerError


def contained(base_dir: str | os.PathLike, entry, *, what: str) -> Path:
    """`entry` (a relative path read from a file) inside `base_dir`, as the real path it resolves to.

    `what` names the file and the field the entry came from (e.g. f"{opt('onnx')} m.onnx: external data location",
    the option cited by `errors.opt`).
    Refused: not a non-empty string, absolute, any `..` component, or resolving outside `base_dir`'s real path."""
    base = Path(base_dir)

    def refuse(why: str):
        raise SmplerError(f"{what} {entry!r}: {why}; refused")

    if not isinstance(entry, str) or not entry or "\0" in entry:
        refuse("expected a relative file name")
    if os.path.isabs(entry):
        refuse(f"an absolute path (expected a name inside {base})")
    if ".." in PurePosixPath(entry.replace("\\", "/")).parts:  # a Windows-written `..\x` too
        refuse(f"leaves {base} through '..'")
    root = os.path.realpath(base)
    real = os.path.realpath(os.path.join(root, entry))
    if real == root:
        refuse(f"names {base} itself, not a file in it")
    if os.path.commonpath([root, real]) != root:
        refuse(f"resolves to {real}, outside {base} (through a symbolic link)")
    return Path(real)


def external_data_locations(model) -> list[str]:
    """Every external-data `location` of an ONNX ModelProto (initializers, sparse initializers, tensors in node
    attributes, subgraphs and functions), sorted and without duplicates."""
    import onnx

    found: set[str] = set()

    def tensor(t):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            found.update(e.value for e in t.external_data if e.key == "location")

    def sparse(s):
        tensor(s.values)
        tensor(s.indices)

    def nodes(ns):
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                if a.HasField("sparse_tensor"):
                    sparse(a.sparse_tensor)
                if a.HasField("g"):
                    graph(a.g)
                for t in a.tensors:
                    tensor(t)
                for s in a.sparse_tensors:
                    sparse(s)
                for g in a.graphs:
                    graph(g)

    def graph(g):
        for t in g.initializer:
            tensor(t)
        for s in g.sparse_initializer:
            sparse(s)
        nodes(g.node)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node)
    return sorted(found)


def onnx_external_files(model, onnx_path: str | os.PathLike, where: str) -> dict[str, Path]:
    """{location: real path} of every external-data file `model` (loaded from `onnx_path` without its external
    data) names, each checked to lie inside the ONNX file's own folder and to exist as a file; `where` names the
    graph in errors (e.g. f"{opt('onnx')} m.onnx")."""
    base = Path(onnx_path).parent
    files = {}
    for loc in external_data_locations(model):
        path = contained(base, loc, what=f"{where}: external data location")
        if not path.is_file():
            raise SmplerError(f"{where}: external data file {loc!r} not found beside it (in {base})")
        files[loc] = path
    return files
