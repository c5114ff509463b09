"""TensorRT session: manifest check, then the one TensorRT executor (`TrtExecutor`: named-tensor I/O, reused
pinned/device buffers, CUDA graphs, device time), which the detector's engines run through too.

Every TensorRT and CUDA call goes through one small `api` object (`TrtCudaApi` here), so the call sequence
(order, buffer reuse, graph re-capture) is tested without a GPU through a strict recording stand-in. The decisions
themselves (shapes, buffer sizes) are plain functions in `trt_plan`; when to capture is the one graph policy
(`graphs.GraphPolicy`), device time the one timer (`timing.EventTimer`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import SmplerError
from ..outputs import OUTPUT_NAMES, SMPLOutput
from ..precision import GRAPH_KINDS, Precision
from ..trt.dtypes import np_dtype
from ..trt.manifest import check_manifest, read_manifest
from .base import Session, SessionInfo
from .graphs import GraphState
from .timing import EventTimer
from .trt_plan import Profile, TensorSpec, buffers_to_grow, nbytes, plan_input_shape, trt_graph_policy


class TrtCudaApi:
    """The real TensorRT + CUDA calls, one method each (imports are lazy: the package imports without them)."""

    def __init__(self, flavour: str):
        from ..trt import cuda_mem
        from ..trt.importer import import_trt

        self.trt, self.flavour = import_trt(flavour)
        self.cuda = cuda_mem
        self.runtime = None
        self.runtime_config = None

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

    def create_context(self, engine, runtime_graphs: bool = False):
        """runtime_graphs (TensorRT-RTX): the runtime config's CUDA-graph strategy, whole-graph capture."""
        if not runtime_graphs:
            return engine.create_execution_context()
        config = engine.create_runtime_config()
        config.cuda_graph_strategy = self.trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        self.runtime_config = config  # kept with the context it configured
        return engine.create_execution_context(config)

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

    def end_capture_on_error(self, stream):
        self.cuda.end_capture_on_error(stream)

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


class TrtExecutor:
    """One deserialized engine on one stream: input shapes set when they change, grow-only pinned + device buffers
    bound by name, the enqueue (a CUDA graph when the graph policy says so), outputs copied back, and the device
    time of the enqueue alone (`EventTimer`: trtexec's "GPU Compute"). `what` names the engine in errors."""

    def __init__(self, api, plan: bytes, what: str, *, flavour: str, cuda_graphs: bool = True, warmup: int = 2,
                 host_code_allowed: bool = False):
        self.api, self.what = api, what
        self.policy = trt_graph_policy(cuda_graphs, warmup, flavour)  # before any TensorRT call: warmup >= 1
        self.engine = api.deserialize(plan, host_code_allowed=host_code_allowed)
        if self.engine is None:
            api.device_sm()  # no driver or no GPU: that reason (one line), not a file said to be corrupt
            raise SmplerError(f"{what}: TensorRT could not deserialize the engine (corrupt or truncated file, or "
                              "built by another TensorRT version / for another GPU); rebuild it")
        self.ctx = api.create_context(self.engine, runtime_graphs=self.policy.runtime)
        specs = api.io_tensors(self.engine)
        self.inputs = [t for t in specs if t.is_input]
        self.outputs = [t for t in specs if not t.is_input]
        self.stream = api.stream_create()
        self.timer = EventTimer(api, self.stream)
        self.last_device_ms: float | None = None
        self.dev: dict[str, tuple[int, int]] = {}  # name -> (device ptr, bytes)
        self.host: dict[str, tuple[int, np.ndarray]] = {}  # name -> (pinned ptr, uint8 view)
        self.shapes: dict[str, tuple] = {}  # input name -> the shape last set
        self.closed = False

    def profile(self, name: str) -> Profile:
        return self.api.profile(self.engine, name)

    # -- buffers and graphs
    def _grow(self, name: str, size: int) -> None:
        api = self.api
        if name in self.dev:
            api.free(self.dev.pop(name)[0])
            api.host_free(self.host.pop(name)[0])
        self.dev[name] = (api.malloc(size), size)
        self.host[name] = api.host_alloc(size)
        if not api.set_tensor_address(self.ctx, name, self.dev[name][0]):
            raise SmplerError(f"{self.what}: TensorRT refused the address for tensor {name}")

    def _destroy(self, graphs) -> None:
        for graph, graph_exec in graphs:
            self.api.graph_destroy(graph, graph_exec)

    def _enqueue(self) -> None:
        if not self.api.execute_async(self.ctx, self.stream):
            raise SmplerError(f"{self.what}: TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _capture(self, key) -> None:
        """trtexec's capture: enqueue under capture, instantiate, launch. On failure (trtexec's endCaptureOnError)
        capture mode is left, the partial graph dropped and the CUDA error cleared before the plain enqueue, and
        graphs stay off for this executor (some engines contain non-capturable work)."""
        api, graph, graph_exec = self.api, None, None
        try:
            api.begin_capture(self.stream)
            if not api.execute_async(self.ctx, self.stream):
                raise RuntimeError("execute_async_v3 returned False under capture")
            graph = api.end_capture(self.stream)
            graph_exec = api.graph_instantiate(graph)
        except Exception as e:  # engine not capturable: fall back to plain enqueues for good
            try:
                if graph is not None or graph_exec is not None:
                    api.graph_destroy(graph, graph_exec)
                api.end_capture_on_error(self.stream)
            except Exception:  # noqa: BLE001 - the plain enqueue below reports a broken stream
                pass
            self._destroy(self.policy.failed(f"{e.__class__.__name__}: {e}"))
            self._enqueue()
            return
        self.policy.captured(key, (graph, graph_exec))
        api.graph_launch(graph_exec, self.stream)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name (any shape the engine accepts; cast to the engine's dtype) -> outputs by name, float32
        copies (the pinned buffers are reused by the next call)."""
        if self.closed:
            raise SmplerError(f"{self.what}: session is closed")
        api = self.api
        for name, arr in feeds.items():
            shape = tuple(int(d) for d in arr.shape)
            if self.shapes.get(name) != shape:
                if not api.set_input_shape(self.ctx, name, shape):
                    raise SmplerError(f"{self.what}: TensorRT refused input shape {list(shape)} for {name}")
                self.shapes[name] = shape
        specs = {t.name: t for t in self.inputs + self.outputs}
        out_shapes = {o.name: api.get_tensor_shape(self.ctx, o.name) for o in self.outputs}
        needed = {n: nbytes(a.shape, specs[n].dtype) for n, a in feeds.items()}
        needed |= {n: nbytes(s, specs[n].dtype) for n, s in out_shapes.items()}
        for name, size in buffers_to_grow({n: b for n, (_, b) in self.dev.items()}, needed).items():
            self._grow(name, size)
        for name, arr in feeds.items():
            n = needed[name]
            self.host[name][1][:n].view(specs[name].dtype).reshape(arr.shape)[...] = arr  # casts to the engine dtype
            api.memcpy_htod(self.dev[name][0], self.host[name][0], n, self.stream)

        # a graph freezes shapes and addresses: both are its key
        key = (tuple(sorted(self.shapes.items())), tuple(sorted((n, p) for n, (p, _) in self.dev.items())))
        decision = self.policy.decide(key)
        self.timer.start()
        self._destroy(decision.release)  # stale: other shapes or addresses
        if decision.action == "replay":
            api.graph_launch(self.policy.graph(key)[1], self.stream)
        elif decision.action == "capture":
            self._capture(key)
        else:
            self._enqueue()
            self.policy.ran(key)
        self.timer.stop()

        for o in self.outputs:
            api.memcpy_dtoh(self.host[o.name][0], self.dev[o.name][0], needed[o.name], self.stream)
        api.synchronize(self.stream)
        self.last_device_ms = self.timer.elapsed_ms()
        return {o.name: self.host[o.name][1][: needed[o.name]].view(o.dtype).reshape(out_shapes[o.name])
                .astype(np.float32) for o in self.outputs}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        api = self.api
        self._destroy(self.policy.release_all())
        for name in list(self.dev):
            api.free(self.dev.pop(name)[0])
            api.host_free(self.host.pop(name)[0])
        self.timer.close()
        api.stream_destroy(self.stream)
        api.release(self.ctx, self.engine)
        self.ctx = self.engine = None


class TensorRTSession(Session):
    """`Session` over a TensorRT / TensorRT-RTX engine built by `smpler_deploy.engine.builder`."""

    backend = "tensorrt"

    def __init__(self, engine_path, *, flavour: str | None = None, cuda_graphs: bool = True, warmup: int = 2,
                 kernel_dir=None, api=None):
        """kernel_dir: where the attention plugins' AOT kernels are (None: the cache directory `smpler-aot`
        writes to; the commands pass their flag or environment default); only engines with plugins need it."""
        path = Path(engine_path)
        self.where = path.name
        if not path.is_file():
            raise SmplerError(f"{path}: engine file not found")
        # Manifest first: a wrong engine gets a precise message instead of a None from TensorRT.
        manifest = read_manifest(path)
        self.manifest = manifest
        prec = manifest.get("precision") or "fp32"  # the graph's; None when it names no precision we know
        self.precision = Precision.from_metadata({"precision": prec}, str(path)) if prec in GRAPH_KINDS else None
        self.info = SessionInfo(variant=manifest.get("variant"), device="cuda")
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
        self.executor = exe = TrtExecutor(api, plan, str(path), flavour=flavour, cuda_graphs=cuda_graphs,
                                          warmup=warmup, host_code_allowed=vc)
        self.outputs = exe.outputs
        missing = [n for n in OUTPUT_NAMES if n not in {s.name for s in self.outputs}]
        if len(exe.inputs) != 1 or missing:
            exe.close()
            raise SmplerError(
                f"{path}: not an SMPLer engine (inputs {[s.name for s in exe.inputs]}, missing outputs {missing})"
            )
        self.input = exe.inputs[0]
        self.profile = exe.profile(self.input.name)
        self.max_batch = int(self.profile.max[0])

    @property
    def last_device_ms(self) -> float | None:
        return self.executor.last_device_ms

    @property
    def cuda_graphs(self) -> GraphState:
        return self.executor.policy.state

    @property
    def buffers(self) -> dict[str, tuple[int, int]]:
        """name -> (device address, bytes allocated) of the bound I/O buffers (grow-only; the self-check reads it)."""
        return dict(self.executor.dev)

    @property
    def device_memory_mb(self) -> float:
        return self.api.device_memory_used_mb()

    def _run(self, images: np.ndarray) -> SMPLOutput:
        shape = plan_input_shape(images.shape, self.input, self.profile, self.where)
        outs = self.executor.run({self.input.name: images.reshape(shape)})
        return SMPLOutput(*(outs[n] for n in OUTPUT_NAMES))

    def _release(self) -> None:
        self.executor.close()
