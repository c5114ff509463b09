"""TensorRT session: manifest check, named-tensor I/O, reused pinned/device buffers, CUDA graphs.

Every TensorRT and CUDA call goes through one small `api` object (`TrtCudaApi` here), so the call sequence
(order, buffer reuse, graph re-capture) is tested without a GPU through a recording stand-in. The decisions
themselves (shapes, buffer sizes, when to capture) are plain functions in `trt_plan`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import SmplerError
from ..outputs import OUTPUT_NAMES, SMPLOutput
from ..trt.manifest import check_manifest, read_manifest
from .base import check_images, check_outputs
from .trt_plan import GraphPolicy, Profile, TensorSpec, buffers_to_grow, nbytes, np_dtype, plan_input_shape


class TrtCudaApi:
    """The real TensorRT + CUDA calls, one method each (imports are lazy: the package imports without them)."""

    def __init__(self, flavour: str):
        from ..trt import cuda_mem
        from ..trt.importer import import_trt

        self.trt, self.flavour = import_trt(flavour)
        self.cuda = cuda_mem
        self.runtime = None

    # -- TensorRT
    def trt_version(self) -> str:
        return self.trt.__version__

    def device_sm(self) -> int | None:
        return self.cuda.device_sm()

    def register_plugins(self, plugins: list[dict], what: str, kernel_dir) -> list[str]:
        from ..trt.plugins import register_smpler_plugins

        return register_smpler_plugins(self.trt, self.flavour, what, plugins, kernel_dir=kernel_dir)

    def deserialize(self, plan: bytes, host_code_allowed: bool = False):
        trt = self.trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if host_code_allowed:  # version-compatible engines embed their lean runtime
            self.runtime.engine_host_code_allowed = True
        return self.runtime.deserialize_cuda_engine(plan)

    def create_context(self, engine):
        return engine.create_execution_context()

    def io_tensors(self, engine) -> list[TensorSpec]:
        out = []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT
            out.append(TensorSpec(n, is_input, np_dtype(engine.get_tensor_dtype(n).name), tuple(engine.get_tensor_shape(n))))
        return out

    def profile(self, engine, name: str) -> Profile:
        lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
        return Profile(tuple(lo), tuple(opt), tuple(hi))

    def set_input_shape(self, ctx, name, shape) -> bool:
        return ctx.set_input_shape(name, shape)

    def get_tensor_shape(self, ctx, name) -> tuple:
        return tuple(ctx.get_tensor_shape(name))

    def set_tensor_address(self, ctx, name, ptr) -> bool:
        return ctx.set_tensor_address(name, ptr)

    def execute_async(self, ctx, stream) -> bool:
        return ctx.execute_async_v3(self.cuda.stream_handle(stream))

    def release(self, ctx, engine) -> None:
        del ctx, engine  # TensorRT objects free on refcount; the runtime must outlive the engine
        self.runtime = None

    # -- CUDA
    def stream_create(self):
        return self.cuda.stream_create()

    def stream_destroy(self, stream):
        self.cuda.stream_destroy(stream)

    def malloc(self, n):
        return self.cuda.malloc(n)

    def free(self, ptr):
        self.cuda.free(ptr)

    def host_alloc(self, n):
        return self.cuda.host_alloc(n)

    def host_free(self, ptr):
        self.cuda.host_free(ptr)

    def memcpy_htod(self, dst, src, n, stream):
        self.cuda.memcpy_htod(dst, src, n, stream)

    def memcpy_dtoh(self, dst, src, n, stream):
        self.cuda.memcpy_dtoh(dst, src, n, stream)

    def synchronize(self, stream):
        self.cuda.synchronize(stream)

    def begin_capture(self, stream):
        self.cuda.begin_capture(stream)

    def end_capture(self, stream):
        return self.cuda.end_capture(stream)

    def graph_instantiate(self, graph):
        return self.cuda.graph_instantiate(graph)

    def graph_launch(self, graph_exec, stream):
        self.cuda.graph_launch(graph_exec, stream)

    def graph_destroy(self, graph, graph_exec):
        self.cuda.graph_destroy(graph, graph_exec)

    def event_create(self):
        return self.cuda.event_create()

    def event_record(self, event, stream):
        self.cuda.event_record(event, stream)

    def event_elapsed_ms(self, start, end) -> float:
        return self.cuda.event_elapsed_ms(start, end)

    def event_destroy(self, event):
        self.cuda.event_destroy(event)

    def device_memory_used_mb(self) -> float:
        return self.cuda.device_memory_used_mb()


class TensorRTSession:
    """`Session` over a TensorRT / TensorRT-RTX engine built by `smpler_deploy.engine.builder`."""

    backend = "tensorrt"

    def __init__(self, engine_path, *, flavour: str | None = None, cuda_graphs: bool = True, warmup: int = 2,
                 kernel_dir=None, api=None):
        """kernel_dir: where the attention plugins' AOT kernels are (--kernel-dir; default $SMPLER_KERNEL_DIR,
        else the cache directory `smpler-aot` writes to); only engines with plugins need it."""
        path = Path(engine_path)
        self.name = path.name
        if not path.is_file():
            raise SmplerError(f"{path}: engine file not found")
        # Manifest first: a wrong engine gets a precise message instead of a None from TensorRT.
        manifest = read_manifest(path)
        self.manifest = manifest
        self.precision = manifest.get("precision") or "fp32"
        flavour = flavour or manifest["trt"]["flavour"]
        self.api = api = api if api is not None else TrtCudaApi(flavour)
        plan = path.read_bytes()
        sm = api.device_sm()
        check_manifest(manifest, path, api.trt_version(), sm, flavour=flavour,
                       engine_sha256=hashlib.sha256(plan).hexdigest())  # fmt: skip
        if manifest["plugins"]:
            # Kernels for this GPU are checked now, not at the first execute (TensorRT would only report a
            # failed enqueue): the message names the SM and the smpler-aot command that builds them.
            from ..plugins.kernel_store import check_kernels_for, resolve_kernel_dir
            from ..trt.plugins import kernels_needed

            kdir = resolve_kernel_dir(kernel_dir)
            if sm is not None:
                check_kernels_for(kdir, sm, kernels_needed(manifest["plugins"]), str(path))
            self.kernel_dir = kdir
            api.register_plugins(manifest["plugins"], str(path), kdir)
        vc = bool(manifest["build"].get("options", {}).get("version_compatible"))
        self.engine = api.deserialize(plan, host_code_allowed=vc)
        if self.engine is None:
            raise SmplerError(
                f"{path}: TensorRT could not deserialize the engine (corrupt or truncated file, or built by "
                "another TensorRT version / for another GPU); rebuild it"
            )
        self.ctx = api.create_context(self.engine)
        specs = api.io_tensors(self.engine)
        inputs = [s for s in specs if s.is_input]
        self.outputs = [s for s in specs if not s.is_input]
        missing = [n for n in OUTPUT_NAMES if n not in {s.name for s in self.outputs}]
        if len(inputs) != 1 or missing:
            raise SmplerError(
                f"{path}: not an SMPLer engine (inputs {[s.name for s in inputs]}, missing outputs {missing})"
            )
        self.input = inputs[0]
        self.profile = api.profile(self.engine, self.input.name)
        self.stream = api.stream_create()
        # Device time of the engine alone (trtexec's "GPU Compute"), apart from host latency and copies.
        self.events = (api.event_create(), api.event_create())
        self.last_device_ms: float | None = None
        self.dev: dict[str, tuple[int, int]] = {}  # name -> (device ptr, bytes)
        self.host: dict[str, tuple[int, np.ndarray]] = {}  # name -> (pinned ptr, uint8 view)
        self.policy = GraphPolicy(enabled=cuda_graphs, warmup=warmup)
        self.graph = None  # (graph, graph_exec)
        self.shape = None
        self.closed = False

    # -- buffers and graphs
    def _grow(self, name: str, size: int) -> None:
        api = self.api
        if name in self.dev:
            api.free(self.dev[name][0])
            api.host_free(self.host[name][0])
        self.dev[name] = (api.malloc(size), size)
        self.host[name] = api.host_alloc(size)
        if not api.set_tensor_address(self.ctx, name, self.dev[name][0]):
            raise SmplerError(f"{self.name}: TensorRT refused the address for tensor {name}")

    def _drop_graph(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            self.api.graph_destroy(*graph)

    def _enqueue(self) -> None:
        if not self.api.execute_async(self.ctx, self.stream):
            raise SmplerError(f"{self.name}: TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _capture(self, key) -> None:
        api, graph, graph_exec = self.api, None, None
        try:
            api.begin_capture(self.stream)
            try:
                ok = api.execute_async(self.ctx, self.stream)
            finally:
                graph = api.end_capture(self.stream)  # always leave capture mode
            if not ok:
                raise RuntimeError("execute_async_v3 returned False under capture")
            graph_exec = api.graph_instantiate(graph)
        except Exception as e:  # engine not capturable: fall back to plain enqueues for good
            if graph is not None or graph_exec is not None:
                try:
                    api.graph_destroy(graph, graph_exec)
                except Exception:
                    pass
            self.policy.failed(f"{e.__class__.__name__}: {e}")
            self._enqueue()
            return
        self.graph = (graph, graph_exec)
        self.policy.captured(key)
        api.graph_launch(graph_exec, self.stream)

    # -- Session protocol
    def infer(self, images) -> SMPLOutput:
        if self.closed:
            raise SmplerError(f"{self.name}: session is closed")
        arr = check_images(images)
        api, inp = self.api, self.input
        shape = plan_input_shape(arr.shape, inp, self.profile, self.name)
        if shape != self.shape:
            if not api.set_input_shape(self.ctx, inp.name, shape):
                raise SmplerError(f"{self.name}: TensorRT refused input shape {list(shape)}")
            self.shape = shape
        out_shapes = {o.name: api.get_tensor_shape(self.ctx, o.name) for o in self.outputs}
        needed = {inp.name: nbytes(shape, inp.dtype)}
        needed |= {o.name: nbytes(out_shapes[o.name], o.dtype) for o in self.outputs}
        for name, size in buffers_to_grow({n: b for n, (_, b) in self.dev.items()}, needed).items():
            self._grow(name, size)

        n_in = needed[inp.name]
        self.host[inp.name][1][:n_in].view(inp.dtype).reshape(shape)[...] = arr  # casts if the engine I/O is fp16
        api.memcpy_htod(self.dev[inp.name][0], self.host[inp.name][0], n_in, self.stream)

        key = (shape, tuple(sorted((n, p) for n, (p, _) in self.dev.items())))
        decision = self.policy.decide(key)
        api.event_record(self.events[0], self.stream)
        if decision.release_graph:
            self._drop_graph()
        if decision.action == "replay":
            api.graph_launch(self.graph[1], self.stream)
        elif decision.action == "capture":
            self._capture(key)
        else:
            self._enqueue()
            self.policy.ran(key)
        api.event_record(self.events[1], self.stream)

        for o in self.outputs:
            api.memcpy_dtoh(self.host[o.name][0], self.dev[o.name][0], needed[o.name], self.stream)
        api.synchronize(self.stream)
        self.last_device_ms = api.event_elapsed_ms(*self.events)
        outs = {
            o.name: self.host[o.name][1][: needed[o.name]].view(o.dtype).reshape(out_shapes[o.name]).astype(np.float32)
            for o in self.outputs
        }  # astype copies: the pinned buffers are reused by the next call
        return check_outputs(SMPLOutput(*(outs[n] for n in OUTPUT_NAMES)), self.name)

    @property
    def device_memory_mb(self) -> float:
        return self.api.device_memory_used_mb()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        api = self.api
        self._drop_graph()
        for name in list(self.dev):
            api.free(self.dev.pop(name)[0])
            api.host_free(self.host.pop(name)[0])
        for ev in self.events:
            api.event_destroy(ev)
        api.stream_destroy(self.stream)
        api.release(self.ctx, self.engine)
        self.ctx = self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
