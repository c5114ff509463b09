"""TensorRT IPluginV3 (OneCore/OneBuild/OneRuntime) Python plugins for the two attention kernels.

Works with `tensorrt` 10.3..11.x and `tensorrt_rtx`: pass the module (from `trt.importer.import_trt`).
The ONNX parser maps `SmplerLocalAttention` / `SmplerGlobalAttention` nodes (see `plugins.onnx_nodes`) to these
creators through namespace "smpler", version "1". `register_smpler_plugins` must run before parsing (build)
and before deserializing an engine (runtime): the engine stores only the plugin's name and fields.

Build-time methods never touch CUDA (TensorRT-RTX builds without a GPU and calls all of them). At run time
`on_shape_change` resolves the AOT kernel for the context's GPU once (`trt.launch`) and `enqueue` only
launches it. Nothing here imports torch or Triton.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import SmplerError, opt
from ..plugins.abi import CHANNELS, HEADS, KERNEL_ABI, NUM_SCALES, RADIUS
from ..plugins.graph import GLOBAL_OP, LOCAL_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from ..plugins.kernel_store import check_kernels_for, resolve_kernel_dir
from . import launch as L
from .importer import ensure_rtx_soname, rtx_soname_fix_command

# Per op: AOT kernel name, input roles ("F" = the float storage type shared by feature/qk/output, fp32 or fp16;
# "32" = always fp32), the input whose shape/type the output copies, ranks, and the ONNX attributes (fields).
SPECS = {
    LOCAL_OP: {"kernel": "local_attention", "inputs": ("F", "32", "F", "32"), "out_like": 2,
               "names": ("feat_nhwc", "joints2d", "qk", "table"), "ranks": (4, 3, 4, 3), "attrs": {"radius": RADIUS},
               "types": "feat_nhwc and qk both fp32 or both fp16, joints2d and table fp32"},
    GLOBAL_OP: {"kernel": "global_attention", "inputs": ("F",) * 5, "out_like": 0,
                "names": ("qk", "keys0", "keys1", "keys2", "keys3"), "ranks": (5, 3, 3, 3, 3), "attrs": {},
                "types": "qk and keys0..3 all fp32 or all fp16"},
}

log = logging.getLogger("smpler_deploy.plugins")
_classes: dict = {}  # trt module name -> (plugin class, creator class)
# (trt module name, op) -> our registered creator: referenced for the life of the process (TensorRT keeps only a
# pointer), and told the kernel directory of each registration.
_creators: dict = {}


def kernels_needed(plugins) -> list[str]:
    """AOT kernel names an engine's plugin list (manifest/ONNX summary: dicts with "name") launches."""
    names = {p["name"] if isinstance(p, dict) else p for p in plugins}
    return [SPECS[op]["kernel"] for op in SPECS if op in names]


def register_plugins(trt, kernel_dir: str | os.PathLike | None = None) -> list[str]:
    """Register both creators under namespace "smpler" (idempotent). Plugins they create from now on load their
    AOT kernels from `kernel_dir` (None: the smpler-aot cache directory). Returns the plugin names."""
    _, creator_cls = _make_classes(trt)
    registry = trt.get_plugin_registry()
    kdir = resolve_kernel_dir(kernel_dir)
    for op in SPECS:
        if registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:  # registered: ours is told
            if (ours := _creators.get((trt.__name__, op))) is not None:
                ours.kernel_dir = kdir
            continue
        creator = creator_cls(op, kdir)
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            raise SmplerError(f"{op}: TensorRT refused to register the plugin creator")
        _creators[(trt.__name__, op)] = creator
    return list(SPECS)


def get_creator(trt, op: str):
    return trt.get_plugin_registry().get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE)


# ------------------------------------------------------------------------------------------------ fields

def fields_from_collection(op: str, fc) -> dict:
    """PluginFieldCollection (from the ONNX node or an engine) -> dict, defaults filled, unknown names ignored."""
    fields = dict(SPECS[op]["attrs"], kernel_abi=KERNEL_ABI)
    for f in fc or []:
        if f.name in fields:
            fields[f.name] = int(np.asarray(f.data).reshape(-1)[0])
    return fields


def _field_collection(trt, fields: dict, keep: list):
    # PluginField does not own its buffer: the arrays must outlive the collection (kept by the plugin), or
    # TensorRT serializes freed memory (seen here: radius 4 read back as 1).
    arrays = [np.array([v], dtype=np.int32) for v in fields.values()]
    keep[:] = arrays
    return trt.PluginFieldCollection(
        [trt.PluginField(k, a, trt.PluginFieldType.INT32) for k, a in zip(fields, arrays)]
    )


def _dtype_name(trt, t) -> str:
    return {trt.DataType.FLOAT: "fp32", trt.DataType.HALF: "fp16"}.get(t) or str(t).rsplit(".", 1)[-1].lower()


def check_types(op: str, layer: str, names: list[str]) -> str:
    """Input dtype names ("fp32", "fp16", "bf16", ...) -> the storage dtype, or a SmplerError naming the layer."""
    roles = SPECS[op]["inputs"]
    ok = len(names) == len(roles) and names[0] in ("fp32", "fp16") and all(
        n == (names[0] if r == "F" else "fp32") for n, r in zip(names, roles))
    if not ok:
        got = ", ".join(f"{k}={n}" for k, n in zip(SPECS[op]["names"], names))
        raise SmplerError(f"{layer} ({op}): unsupported input types {got}; expected {SPECS[op]['types']}")
    return names[0]


def _reported(method):
    """Log a plugin method's exception before re-raising it: TensorRT reduces it to a bare "non-zero return code"
    (the parser to `Invalid Node - <name>`), so the logged line is where the reason is seen."""
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception as e:
            msg = str(e) if isinstance(e, SmplerError) else f"{self.layer} ({self.op}): {method.__name__}: {e!r}"
            log.error(msg)
            raise
    return wrapper


# ------------------------------------------------------------------------------------------------ classes

class _StaticChecks:
    """The plugin methods that need neither the TensorRT module nor CUDA (mixed into the plugin class)."""

    def get_capability_interface(self, type):
        return self

    def _check_static(self, dims):
        c_ok = lambda c: 0 < c <= CHANNELS and c % 16 == 0  # noqa: E731  (BLOCK_C, 16-divisible hint)
        if self.op == LOCAL_OP:
            c, nh, r = dims[0][3], dims[2][2], self.fields["radius"]
            ok = c_ok(c) and (nh, r, dims[3]) == (HEADS, RADIUS, (HEADS, 2 * r + 1, 2 * r + 1))
            ok = ok and dims[0][1] == dims[0][2] and dims[1][2] == 2 and dims[2][3] == c
        else:
            c = dims[0][4]
            ok = dims[0][1] == NUM_SCALES and c_ok(c) and all(d[2] == c for d in dims[1:5])
        if not ok:
            raise SmplerError(f"{self.layer} ({self.op}): shapes {dims} do not match the compiled kernels "
                              f"(C<={CHANNELS} and a multiple of 16, NH={HEADS}, radius={RADIUS})")

    def get_workspace_size(self, inp, out):
        return 0

    def get_valid_tactics(self):
        return []  # one implementation; TensorRT-RTX picks the first listed tactic without timing anyway

    def set_tactic(self, tactic):
        pass

    def attach_to_context(self, context):
        return self.clone()


def _make_classes(trt):
    """(plugin class, creator class) over this TensorRT module's IPluginV3 interfaces, made once per module."""
    key = trt.__name__
    if key not in _classes:
        plugin_cls = _plugin_class(trt)
        _classes[key] = (plugin_cls, _creator_class(trt, plugin_cls))
    return _classes[key]


def _plugin_class(trt):
    class AttentionPlugin(_StaticChecks, trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                          trt.IPluginV3OneRuntime):
        def __init__(self, op: str, layer: str = "", fields: dict | None = None, phase=None, kernel_dir=None):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.op, self.layer, self.phase = op, layer or op, phase
            self.kernel_dir = resolve_kernel_dir(kernel_dir)  # where `_resolve` loads the AOT kernel from
            self.fields = dict(fields) if fields is not None else fields_from_collection(op, None)
            self.num_outputs = 1
            self.plugin_name = op
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self.dtype = None
            self._field_arrays: list = []
            self._launch = None  # trt.launch.PreparedLaunch for the current shapes (runtime)

        # -- core / build (no CUDA here: TensorRT-RTX calls these on GPU-less machines)
        def clone(self):
            c = AttentionPlugin(self.op, self.layer, self.fields, self.phase, self.kernel_dir)
            c.dtype = self.dtype
            return c

        @_reported
        def get_output_data_types(self, input_types):
            self.dtype = check_types(self.op, self.layer, [_dtype_name(trt, t) for t in input_types])
            return [input_types[SPECS[self.op]["out_like"]]]

        @_reported
        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            ranks = tuple(len(x) for x in inputs)
            if ranks != SPECS[self.op]["ranks"]:
                raise SmplerError(f"{self.layer} ({self.op}): input ranks {ranks}, expected {SPECS[self.op]['ranks']}")
            return [trt.DimsExprs(inputs[SPECS[self.op]["out_like"]])]  # batch stays symbolic

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = getattr(in_out[pos], "desc", in_out[pos])
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            roles = SPECS[self.op]["inputs"]
            role = roles[pos] if pos < num_inputs else "F"
            if role == "32":
                return desc.type == trt.DataType.FLOAT
            if pos == 0:
                return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
            return desc.type == getattr(in_out[0], "desc", in_out[0]).type

        @_reported
        def configure_plugin(self, inp, out):
            # Static dims must match the AOT specialization; reject at build time, naming the layer.
            self._check_static([tuple(d.max) for d in inp])  # -1 never appears in max

        # -- runtime: resolve the kernel once per context and shape set, launch in enqueue
        def on_shape_change(self, inp, out):
            self._prepare([getattr(d, "desc", d) for d in inp])

        @_reported
        def _prepare(self, descs):
            dtype = check_types(self.op, self.layer, [_dtype_name(trt, d.type) for d in descs])
            self._launch = None
            if self.phase == trt.TensorRTPhase.BUILD:  # no GPU needed to build; a timing build resolves in enqueue
                return
            self._resolve(L.cuda_driver(), dtype, tuple(tuple(d.dims) for d in descs))

        def _resolve(self, cu, dtype, shapes):
            fn = L.resolve_function(cu, SPECS[self.op]["kernel"], dtype, self.kernel_dir, self.fields["kernel_abi"])
            self._launch = L.PreparedLaunch(cu, fn, shapes, self.layer)

        def get_fields_to_serialize(self):
            return _field_collection(trt, self.fields, self._field_arrays)

        @_reported
        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            launch, shapes = self._launch, tuple(tuple(d.dims) for d in input_desc)
            if launch is None or launch.shapes != shapes:
                dtype = check_types(self.op, self.layer, [_dtype_name(trt, d.type) for d in input_desc])
                self._resolve(L.cuda_driver(), dtype, shapes)
                launch = self._launch
            launch([*inputs, outputs[0]], stream)

    return AttentionPlugin


def _creator_class(trt, plugin_cls):
    class AttentionCreator(trt.IPluginCreatorV3One):
        def __init__(self, op: str, kernel_dir: Path | None = None):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = op
            self.kernel_dir = kernel_dir  # handed to every plugin it creates (`register_plugins` sets it)
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            # Only ONNX attributes are listed (the parser warns about listed fields a node lacks);
            # kernel_abi is added on serialization and read back on deserialization.
            self._name_arrays = [np.array([], dtype=np.int32) for _ in SPECS[op]["attrs"]]  # see _field_collection
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(k, a, trt.PluginFieldType.INT32) for k, a in zip(SPECS[op]["attrs"], self._name_arrays)])

        def create_plugin(self, name, fc, phase):
            return plugin_cls(self.name, name, fields_from_collection(self.name, fc), phase, self.kernel_dir)

    return AttentionCreator


def register_smpler_plugins(trt, flavour: str, what: str, needed: list[dict] = (), *,
                            kernel_dir: str | os.PathLike | None = None, sm: int | None = None) -> list[str]:
    """Register our plugin creators with `trt` (build and runtime side); one-line errors when impossible.

    kernel_dir: the plugins' AOT kernels (None: the smpler-aot cache directory), handed to every plugin the
    creators make from now on. sm: the GPU that will run the plugins (session open, full TensorRT builds,
    `flavour` tensorrt): refuse now, naming the SM and the command that builds its kernels, rather than at the
    first execute.
    TensorRT-RTX: the wheel's missing soname link is created here (`importer.ensure_rtx_soname`), the one
    place that needs it, or the graph is refused with the command that creates it."""
    if flavour == "tensorrt-rtx" and not ensure_rtx_soname():
        # The TRT-RTX parser dlopens libtensorrt_rtx.so for plugin nodes and aborts the process without it.
        raise SmplerError(
            f"{what}: has plugin nodes, and TensorRT-RTX cannot import plugins until this link exists: "
            f"{rtx_soname_fix_command()} (or export with {opt('no_plugins')})"
        )
    if sm is not None and needed:
        check_kernels_for(resolve_kernel_dir(kernel_dir), sm, kernels_needed(needed), what)
    registered = [str(n).split("::")[-1] for n in register_plugins(trt, kernel_dir) or []]
    missing = sorted({p["name"] for p in needed} - set(registered))
    if registered and missing:
        raise SmplerError(f"{what}: plugin(s) {', '.join(missing)} are not provided by this smpler-deploy ({registered})")
    return registered
