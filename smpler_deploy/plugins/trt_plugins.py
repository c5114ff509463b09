"""TensorRT IPluginV3 (OneCore/OneBuild/OneRuntime) Python plugins for the two attention kernels.

Works with `tensorrt` 10.3..11.x and `tensorrt_rtx`: pass the module (from `engine.trt_import.import_trt`).
The ONNX parser maps `SmplerLocalAttention` / `SmplerGlobalAttention` nodes (see `onnx_nodes`) to these
creators through namespace "smpler", version "1". `register_plugins(trt)` must run before parsing (build) and
before deserializing an engine (runtime): the engine stores only the plugin's name and fields.

Build-time methods never touch CUDA (TensorRT-RTX builds without a GPU and calls all of them). `enqueue` loads
the AOT cubin for the device's SM (`smpler-aot`, see `plugins.aot`) with cuda-python's driver API, imported
there, and launches it with arguments from `aot.plan_launch` (pure code).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import SmplerError
from . import aot
from .graph import GLOBAL_OP, LOCAL_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION  # torch-free: the runtime needs no torch

KERNEL_ABI = 1  # equals kernels.KERNEL_ABI; not imported from there so the runtime needs no Triton

# Per op: AOT kernel name, input roles ("F" = the float storage type shared by feature/qk/output, fp32 or fp16;
# "32" = always fp32), the input whose shape/type the output copies, ranks, and the ONNX attributes (fields).
SPECS = {
    LOCAL_OP: {"kernel": "local_attention", "inputs": ("F", "32", "F", "32"), "out_like": 2,
               "names": ("feat_nhwc", "joints2d", "qk", "table"), "ranks": (4, 3, 4, 3), "attrs": {"radius": 4},
               "types": "feat_nhwc and qk both fp32 or both fp16, joints2d and table fp32"},
    GLOBAL_OP: {"kernel": "global_attention", "inputs": ("F",) * 5, "out_like": 0,
                "names": ("qk", "keys0", "keys1", "keys2", "keys3"), "ranks": (5, 3, 3, 3, 3), "attrs": {},
                "types": "qk and keys0..3 all fp32 or all fp16"},
}

log = logging.getLogger("smpler_deploy.plugins")
_errors: collections.deque = collections.deque(maxlen=32)
_kernel_dir: Path | None = None
_classes: dict = {}  # trt module name -> (plugin class, creator class)
_creators: list = []  # registered creators stay referenced for the life of the process


def set_kernel_dir(path: str | os.PathLike | None) -> None:
    global _kernel_dir
    _kernel_dir = Path(path) if path is not None else None


def kernel_dir() -> Path:
    return _kernel_dir or aot.default_kernel_dir()


def register_plugins(trt, kernel_dir: str | os.PathLike | None = None) -> list[str]:
    """Register both creators under namespace "smpler" (idempotent). Returns the plugin names."""
    if kernel_dir is not None:
        set_kernel_dir(kernel_dir)
    _, creator_cls = _make_classes(trt)
    registry = trt.get_plugin_registry()
    for op in SPECS:
        if registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:
            continue
        creator = creator_cls(op)
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            raise SmplerError(f"{op}: TensorRT refused to register the plugin creator")
        _creators.append(creator)
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


def plugin_errors(clear: bool = True) -> list[str]:
    """Messages of exceptions raised inside plugin methods since the last call.

    TensorRT turns a Python exception in a plugin method into a bare "non-zero return code" (the parser then
    reports `Invalid Node - <name>`), so builders append these to their own error message.
    """
    out = list(_errors)
    if clear:
        _errors.clear()
    return out


def _reported(method):
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception as e:
            msg = str(e) if isinstance(e, SmplerError) else f"{self.layer} ({self.op}): {method.__name__}: {e!r}"
            _errors.append(msg)
            log.error(msg)
            raise
    return wrapper


# ------------------------------------------------------------------------------------------------ classes

def _make_classes(trt):
    key = trt.__name__
    if key in _classes:
        return _classes[key]

    class AttentionPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, op: str, layer: str = "", fields: dict | None = None, phase=None):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.op, self.layer, self.phase = op, layer or op, phase
            self.fields = dict(fields) if fields is not None else fields_from_collection(op, None)
            self.num_outputs = 1
            self.plugin_name = op
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self.dtype = None
            self._field_arrays: list = []

        # -- core / build (no CUDA here: TensorRT-RTX calls these on GPU-less machines)
        def get_capability_interface(self, type):
            return self

        def clone(self):
            c = AttentionPlugin(self.op, self.layer, self.fields, self.phase)
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
            dims = [tuple(d.max) for d in inp]  # -1 never appears in max
            self._check_static(dims)

        def _check_static(self, dims):
            c_ok = lambda c: 0 < c <= aot.CHANNELS and c % 16 == 0  # noqa: E731  (BLOCK_C, 16-divisible hint)
            if self.op == LOCAL_OP:
                c, nh, r = dims[0][3], dims[2][2], self.fields["radius"]
                ok = c_ok(c) and (nh, r, dims[3]) == (aot.HEADS, aot.RADIUS, (aot.HEADS, 2 * r + 1, 2 * r + 1))
                ok = ok and dims[0][1] == dims[0][2] and dims[1][2] == 2 and dims[2][3] == c
            else:
                c = dims[0][4]
                ok = dims[0][1] == 4 and c_ok(c) and all(d[2] == c for d in dims[1:5])
            if not ok:
                raise SmplerError(f"{self.layer} ({self.op}): shapes {dims} do not match the compiled kernels "
                                  f"(C<={aot.CHANNELS} and a multiple of 16, NH={aot.HEADS}, radius={aot.RADIUS})")

        def get_workspace_size(self, inp, out):
            return 0

        def get_valid_tactics(self):
            return []  # one implementation; TensorRT-RTX picks the first listed tactic without timing anyway

        def set_tactic(self, tactic):
            pass

        # -- runtime
        def on_shape_change(self, inp, out):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            return _field_collection(trt, self.fields, self._field_arrays)

        @_reported
        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            dtype = check_types(self.op, self.layer, [_dtype_name(trt, d.type) for d in input_desc])
            shapes = [tuple(d.dims) for d in input_desc]
            launch(self.op, dtype, shapes, [int(p) for p in inputs] + [int(outputs[0])], int(stream),
                   abi=self.fields["kernel_abi"], layer=self.layer)

    class AttentionCreator(trt.IPluginCreatorV3One):
        def __init__(self, op: str):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = op
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            # Only ONNX attributes are listed (the parser warns about listed fields a node lacks);
            # kernel_abi is added on serialization and read back on deserialization.
            self._name_arrays = [np.array([], dtype=np.int32) for _ in SPECS[op]["attrs"]]  # see _field_collection
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(k, a, trt.PluginFieldType.INT32) for k, a in zip(SPECS[op]["attrs"], self._name_arrays)])

        def create_plugin(self, name, fc, phase):
            return AttentionPlugin(self.name, name, fields_from_collection(self.name, fc), phase)

    _classes[key] = (AttentionPlugin, AttentionCreator)
    return _classes[key]


# ------------------------------------------------------------------------------------------------ runtime

def _cuda():
    try:
        from cuda.bindings import driver  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as driver  # older cuda-python
        except ImportError:
            raise SmplerError("TensorRT plugins need cuda-python at runtime: pip install 'cuda-python>=12.6'") from None
    return driver


def _check(cu, res, what):
    err, *rest = res if isinstance(res, tuple) else (res,)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise SmplerError(f"{what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


_lock = threading.Lock()
_functions: dict = {}  # (context, kernel, dtype) -> (CUfunction, entry); modules stay loaded for the process


def device_sm(cu) -> tuple[int, object]:
    ctx = _check(cu, cu.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if not int(ctx):
        raise SmplerError("no current CUDA context in enqueue")
    dev = _check(cu, cu.cuCtxGetDevice(), "cuCtxGetDevice")
    a = cu.CUdevice_attribute
    major = _check(cu, cu.cuDeviceGetAttribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")
    minor = _check(cu, cu.cuDeviceGetAttribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")
    return major * 10 + minor, ctx


def _function(cu, kernel: str, dtype: str, abi: int):
    sm, ctx = device_sm(cu)
    key = (int(ctx), kernel, dtype)
    with _lock:
        if key not in _functions:
            kdir = kernel_dir()
            index = aot.load_index(kdir)
            if index.get("kernel_abi") != abi:
                raise SmplerError(f"{kdir}: kernels have ABI {index.get('kernel_abi')}, the engine expects {abi}; "
                                  f"rerun `{aot.aot_command(sm, kdir)}` with this smpler-deploy version")
            entry = aot.find_entry(index, kernel, dtype, sm, kdir)
            data = (kdir / entry["cubin"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["cubin_sha256"]:
                raise SmplerError(f"{kdir / entry['cubin']}: checksum differs from index.json; rerun "
                                  f"`{aot.aot_command(sm, kdir)}`")
            module = _check(cu, cu.cuModuleLoadData(data), f"cuModuleLoadData({entry['cubin']})")
            fn = _check(cu, cu.cuModuleGetFunction(module, entry["entry_name"].encode()), "cuModuleGetFunction")
            if entry["shared"] > 48 * 1024:  # dynamic shared memory above 48 KiB needs an explicit opt-in
                attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                _check(cu, cu.cuFuncSetAttribute(fn, attr, entry["shared"]), "cuFuncSetAttribute")
            _functions[key] = (fn, entry, module)
        return _functions[key][:2]


_CTYPES = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "fp32": ctypes.c_float}


def pack_args(plan: aot.LaunchPlan):
    """ctypes storage for each parameter plus the void*[] array cuLaunchKernel reads (keep both alive)."""
    vals = [ctypes.c_uint64(v) if t.startswith("*") else _CTYPES[t](v) for t, v in plan.args]
    ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.addressof(v) for v in vals])
    return vals, ptrs


def launch(op: str, dtype: str, shapes, pointers, stream: int, abi: int = KERNEL_ABI, layer: str = "") -> None:
    cu = _cuda()
    fn, entry = _function(cu, SPECS[op]["kernel"], dtype, abi)
    plan = aot.plan_launch(entry, shapes, pointers)
    vals, ptrs = pack_args(plan)
    _check(cu, cu.cuLaunchKernel(fn, *plan.grid, *plan.block, plan.shared, cu.CUstream(stream),
                              ctypes.addressof(ptrs), 0),
           f"{layer or op}: cuLaunchKernel")
