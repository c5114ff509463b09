"""Import a TensorRT flavour lazily, and repair the TensorRT-RTX wheel's missing soname link.

`tensorrt` (10.x/11.x, datacenter GPUs and Jetson) or `tensorrt_rtx` (RTX GPUs; builds ahead of time without a
GPU). The package imports fine on machines with neither; only building or running engines needs one.

TensorRT-RTX 1.7 wheels ship `libtensorrt_rtx.so.1` but the ONNX parser `dlopen`s `libtensorrt_rtx.so` when it
imports a plugin node; the failure is an uncatchable `std::terminate` (the lookup sits in a `noexcept` static
initializer, so the failed `dlopen` aborts the process: seen under gdb, with any plugin, C++ ones included).
The parser's RPATH is `$ORIGIN`, so a symlink beside it fixes every process. `ensure_rtx_soname` creates it when
asked (registering plugins for a TensorRT-RTX graph, `trt.plugins.register_smpler_plugins`) and site-packages is
writable; otherwise plugin graphs are refused with the one command that fixes it. Importing writes nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from ..errors import OptionError, SmplerError

FLAVOURS = ("tensorrt", "tensorrt-rtx")
INSTALL_HINT = {
    "tensorrt": "pip install 'smpler-deploy[trt]' (TensorRT 10.x/11.x; on Jetson use JetPack's TensorRT)",
    "tensorrt-rtx": "pip install 'smpler-deploy[rtx]' (TensorRT-RTX; builds engines without a GPU)",
}


def rtx_libs_dir() -> Path | None:
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ensure_rtx_soname() -> bool:
    """Make `libtensorrt_rtx.so` resolvable beside the parser (writes the link into site-packages: called only
    where plugin nodes are about to be parsed or deserialized). Returns True when plugin parsing is safe."""
    libs = rtx_libs_dir()
    if libs is None:
        return False
    link = libs / "libtensorrt_rtx.so"
    if link.exists():
        return True
    target = libs / "libtensorrt_rtx.so.1"
    if not target.exists():
        return False
    try:
        os.symlink(target.name, link)
    except FileExistsError:
        pass
    except OSError:
        return False
    return link.exists()


def rtx_soname_fix_command() -> str:
    libs = rtx_libs_dir() or Path("<site-packages>/tensorrt_rtx_libs")
    return f"ln -s libtensorrt_rtx.so.1 {libs / 'libtensorrt_rtx.so'}"


def _has_builder(mod) -> bool:
    # PyPI's `tensorrt` can resolve to lean/dispatch-only bindings or stubs without a Builder.
    return hasattr(mod, "Builder") and hasattr(mod, "OnnxParser")


def import_trt(flavour: str | None = None):
    """Return (trt_module, flavour). `flavour=None` picks whichever is installed, TensorRT first."""
    if flavour is None:
        errors = []
        for f in FLAVOURS:
            try:
                return import_trt(f)
            except SmplerError as e:
                errors.append(str(e))
        raise OptionError("flavour", None, "no TensorRT flavour is installed; install one of: "
                          + "; ".join(f"{f}: {INSTALL_HINT[f]}" for f in FLAVOURS))
    if flavour not in FLAVOURS:
        raise OptionError("flavour", flavour, f"expected one of {', '.join(FLAVOURS)}")
    modname = "tensorrt" if flavour == "tensorrt" else "tensorrt_rtx"
    try:
        mod = importlib.import_module(modname)
    except Exception as e:  # ImportError, or a stub raising on import
        raise OptionError("flavour", flavour, f"cannot import {modname} ({e.__class__.__name__}); {INSTALL_HINT[flavour]}")
    if not _has_builder(mod):
        raise OptionError("flavour", flavour, f"{modname} has no builder (stub or lean package); {INSTALL_HINT[flavour]}")
    return mod, flavour
