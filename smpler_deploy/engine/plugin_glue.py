"""Register SMPLer's TensorRT plugin creators (build and runtime side); finding the nodes is plugins/graph.py.

Plugins must be registered before parsing a graph with plugin nodes and again before deserializing an engine
that contains them (Python IPluginV3 creators live only in the process that registered them).
"""

from __future__ import annotations

from ..errors import SmplerError
from .trt_import import ensure_rtx_soname, rtx_soname_fix_command


def register_smpler_plugins(trt, flavour: str, what: str, needed: list[dict] = ()) -> list[str]:
    """Register our plugin creators with `trt`; one-line errors when that is impossible or incomplete."""
    if flavour == "tensorrt-rtx" and not ensure_rtx_soname():
        # The TRT-RTX parser dlopens libtensorrt_rtx.so for plugin nodes and aborts the process without it.
        raise SmplerError(
            f"{what}: has plugin nodes, and TensorRT-RTX cannot import plugins until this link exists: "
            f"{rtx_soname_fix_command()} (or export with --no-plugins)"
        )
    try:
        from ..plugins.trt_plugins import register_plugins
    except ModuleNotFoundError as e:  # a trimmed install without the plugin module
        if e.name and e.name.startswith("smpler_deploy.plugins"):
            raise SmplerError(f"{what}: needs the smpler TensorRT plugins, which this install lacks; use --no-plugins")
        raise
    registered = [str(n).split("::")[-1] for n in register_plugins(trt) or []]
    missing = sorted({p["name"] for p in needed} - set(registered))
    if registered and missing:
        raise SmplerError(f"{what}: plugin(s) {', '.join(missing)} are not provided by this smpler-deploy ({registered})")
    return registered
