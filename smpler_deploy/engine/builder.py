"""ONNX -> TensorRT / TensorRT-RTX engine, strongly typed, through Polygraphy's loaders, plus its manifest.

Precision lives in the ONNX graph (Casts, Q/DQ), so no precision builder flags are set and the same code builds
on TensorRT 10.3 (Jetson), 11.x and TensorRT-RTX. Option parsing and validation are plain functions; only
`build_engine` touches TensorRT.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import SmplerError
from ..fileio import atomic_path, outputs, sha256_file, stage_dir, write_bytes_atomic, write_text_atomic
from ..outputs import INPUT_NAME, parse_batch
from ..precision import KINDS, Precision
from . import layer_summary
from ..trt.manifest import FLAVOUR_TITLES, SCHEMA, layers_path, manifest_path, write_manifest
from ..plugins.graph import plugin_summary
from ..trt.importer import import_trt
from ..trt.plugins import register_smpler_plugins
from .targets import DEFAULT_SMS, check_sms, valid_sms

# trtexec --memPoolSize pool names -> trt.MemoryPoolType members.
MEM_POOLS = {
    "workspace": "WORKSPACE",
    "dlasram": "DLA_MANAGED_SRAM",
    "dlalocaldram": "DLA_LOCAL_DRAM",
    "dlaglobaldram": "DLA_GLOBAL_DRAM",
    "tacticsharedmem": "TACTIC_SHARED_MEMORY",
}
_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # trtexec: bare number = MiB
HW_COMPAT = ("none", "ampere_plus", "same_compute_capability")


# ---------------------------------------------------------------- option parsing (pure)


def parse_mem_pool_size(spec: str | None) -> dict[str, int]:
    """trtexec syntax: "workspace:2G,tacticSharedMem:48K" -> {"WORKSPACE": 2147483648, ...} (bare number = MiB)."""
    if not spec:
        return {}
    out = {}
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9]*\.?[0-9]+)\s*([BKMG]?)(?:i?B)?\s*", item, re.IGNORECASE)
        pool = MEM_POOLS.get(m.group(1).lower()) if m else None
        if not m or pool is None:
            raise SmplerError(
                f"--mem-pool-size {spec}: expected POOL:SIZE[B|K|M|G] with POOL in {', '.join(MEM_POOLS)} "
                "(e.g. workspace:2G)"
            )
        out[pool] = int(float(m.group(2)) * _UNITS[m.group(3).upper()])
    return out


def normalize_hcl(level: str | None) -> str:
    """--hardware-compatibility-level spellings -> none | ampere_plus | same_compute_capability."""
    hcl = (level or "none").lower().replace("-", "_").replace("+", "_plus")
    if hcl not in HW_COMPAT:
        raise SmplerError(f"--hardware-compatibility-level {level}: expected {', '.join(HW_COMPAT)}")
    return hcl


def check_engine_options(opts) -> None:
    """Every engine flag that can be checked without building (spec.EngineOptions), so errors come first."""
    _engine_option_values(opts.mem_pool_size, opts.builder_optimization_level, opts.hardware_compatibility_level)


def _engine_option_values(mem_pool_size, builder_optimization_level, hardware_compatibility_level):
    """(memory pools, hardware compatibility level) parsed, or a one-line error naming the flag."""
    pools = parse_mem_pool_size(mem_pool_size)
    lvl = builder_optimization_level
    if lvl is not None and not 0 <= int(lvl) <= 5:
        raise SmplerError(f"--builder-optimization-level {lvl}: expected 0..5")
    return pools, normalize_hcl(hardware_compatibility_level)


def sm_to_major_minor(sm: int) -> tuple[int, int]:
    return sm // 10, sm % 10  # 89 -> (8, 9), 120 -> (12, 0)


def profile_shapes(onnx_shape: list, batch: tuple[int, int, int], name: str) -> dict[str, list[int]]:
    """MIN/OPT/MAX shapes from the ONNX input shape (dim 0 = batch; every other dim must be fixed)."""
    rest = onnx_shape[1:]
    if not onnx_shape or any(not isinstance(d, int) or d <= 0 for d in rest):
        raise SmplerError(f"input {name}: only the batch dimension may be dynamic, got {onnx_shape}")
    if isinstance(onnx_shape[0], int) and onnx_shape[0] > 0 and batch != (onnx_shape[0],) * 3:
        raise SmplerError(f"--batch {':'.join(map(str, batch))}: the ONNX input {name} has a fixed batch of {onnx_shape[0]}")
    return {k: [b, *rest] for k, b in zip(("min", "opt", "max"), batch)}


def onnx_facts(onnx_path: str | os.PathLike) -> dict:
    """What the build and the manifest need from the ONNX file, without loading external weights."""
    import onnx

    from ..containment import onnx_external_files

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise SmplerError(f"{onnx_path}: not a readable ONNX model ({e.__class__.__name__})")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise SmplerError(f"{onnx_path}: the graph has no inputs")
    if len(inputs) > 1:
        raise SmplerError(f"{onnx_path}: expected one input ({INPUT_NAME}), got {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim]
    # TensorRT's parser opens every external-data file the graph names: each must lie inside the graph's folder
    ext = onnx_external_files(model, onnx_path, str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    return {
        "input": inputs[0].name,
        "shape": dims,
        "metadata": meta,
        "plugins": plugin_summary(model),
        "sha256": sha256_file(onnx_path),
        "external_data": {loc: sha256_file(path) for loc, path in ext.items()},
    }


# ---------------------------------------------------------------- Polygraphy glue


def _polygraphy_for(flavour: str):
    """Point Polygraphy at the flavour's module. Its loaders bind `tensorrt` or `tensorrt_rtx` at first import
    (from POLYGRAPHY_USE_TENSORRT_RTX), so a process can only ever build with one flavour through them."""
    import polygraphy.config as pcfg

    want = flavour == "tensorrt-rtx"
    if "polygraphy.backend.trt.loader" not in sys.modules:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if want else "0"
        pcfg.USE_TENSORRT_RTX = want
    elif pcfg.USE_TENSORRT_RTX != want:
        other = "tensorrt-rtx" if pcfg.USE_TENSORRT_RTX else "tensorrt"
        raise SmplerError(f"--trt {flavour}: this process already builds with {other}; use one flavour per process")
    import polygraphy.backend.trt as ptrt

    return ptrt


class _Capture(logging.Handler):
    """Collects Polygraphy's log records (TensorRT's messages arrive through them)."""

    def __init__(self, log):
        super().__init__(level=1)
        self.messages: list[tuple[int, str]] = []
        self.log = log

    def emit(self, record):
        msg = record.getMessage()
        self.messages.append((record.levelno, msg))
        if record.levelno == logging.WARNING:
            self.log("  " + msg.strip())

    def errors(self) -> list[str]:
        return [re.sub(r"^\[[A-Z!]\] ", "", m).strip() for lv, m in self.messages if lv >= logging.ERROR]


@contextmanager
def _captured_polygraphy_logs(log):
    """Route Polygraphy's logger (and TensorRT's, which it wraps) into a handler, down to VERBOSE TRT messages,
    so the `Layers:` dump can be read and nothing is printed behind the caller's back."""
    from polygraphy.logger import G_LOGGER

    plog = logging.getLogger("Polygraphy")
    saved = (G_LOGGER.module_severity, G_LOGGER.colors, G_LOGGER.use_python_logging_system, plog.propagate, plog.level)
    handler = _Capture(log)
    plog.addHandler(handler)
    plog.propagate, G_LOGGER.colors = False, False
    plog.setLevel(1)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.EXTRA_VERBOSE  # TRT VERBOSE -> G_LOGGER.extra_verbose
    try:
        with warnings.catch_warnings():
            # Polygraphy always attaches a timing cache; TRT-RTX flags every cache call as a deprecated no-op.
            warnings.filterwarnings("ignore", message=".*Timing cache operations are no-ops.*")
            yield handler
    finally:
        plog.removeHandler(handler)
        G_LOGGER.module_severity, G_LOGGER.colors = saved[0], saved[1]
        G_LOGGER.use_python_logging_system = saved[2]
        plog.propagate = saved[3]
        plog.setLevel(saved[4])


class _CancelOnInterrupt:
    """Ctrl-C during `build_serialized_network`: a KeyboardInterrupt raised inside TensorRT's callbacks is swallowed
    and the build runs to the end. Instead our SIGINT handler records the request and the builder's
    IProgressMonitor (called on this thread between steps) returns False at its next step, which cancels the
    build. A second Ctrl-C raises at once."""

    def __init__(self, trt, log):
        self.cancelled = False
        self.log = log
        base = trt.IProgressMonitor
        outer = self

        class Monitor(base):
            def __init__(self):
                base.__init__(self)

            def phase_start(self, phase_name, parent_phase, num_steps):
                outer.phase_start(phase_name, parent_phase, num_steps)

            def step_complete(self, phase_name, step):
                return not outer.cancelled

            def phase_finish(self, phase_name):
                pass

        self.monitor = Monitor()

    def phase_start(self, phase_name, parent_phase, num_steps):  # a hook for tests and verbose logs
        pass

    def _on_sigint(self, signum, frame):
        if self.cancelled:
            raise KeyboardInterrupt
        self.cancelled = True
        self.log("interrupt: cancelling the engine build (Ctrl-C again to abort at once)")

    @contextmanager
    def sigint(self):
        """Install the handler for the block (main thread only: elsewhere Python delivers no signals anyway)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _first_error(handler: _Capture, default: str) -> str:
    """The most telling TensorRT/Polygraphy error, on one line: the parser's per-node summary
    ("In node 3 with name: ... and operator: ...: reason"), else an assertion/error-code line, else the first."""
    errs = [" ".join(e.split()) for e in handler.errors() if e.strip()]
    errs = [e for e in errs if not e.startswith(("Traceback", "File "))]
    for pattern in (r"^In node \d+", r"Assertion failed|Error Code|ERROR", r"."):
        hit = next((e for e in errs if re.search(pattern, e)), None)
        if hit:
            return f"{default}: {hit[:400]}"
    return default


def _dims(d) -> list[int]:
    return [int(x) for x in d]


def _dtype_name(dt) -> str:
    names = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
             "BOOL": "bool", "UINT8": "uint8", "BF16": "bfloat16", "FP8": "float8e4m3"}  # fmt: skip
    n = getattr(dt, "name", str(dt).rsplit(".", 1)[-1])
    return names.get(n, n.lower())




def _local_sm() -> int | None:
    try:
        from ..trt import cuda_mem

        return cuda_mem.device_sm()
    except Exception:
        return None


# ---------------------------------------------------------------- build


def _inspect_engine(trt, plan: bytes) -> list:
    """Per-layer records through IEngineInspector (needs the GPU that `tensorrt` builds on); [] if unavailable."""
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine(plan)
        text = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    except Exception:  # noqa: BLE001 - the summary is informative; the engine itself is fine
        return []
    return layer_summary.parse_inspector_json(text)


def build_engine(
    onnx_path,
    engine_path,
    *,
    flavour: str | None = None,
    sms=None,
    batch=(1, 1, 8),
    timing_cache=None,
    builder_optimization_level: int | None = None,
    mem_pool_size: str | None = None,
    version_compatible: bool = False,
    hardware_compatibility_level: str | None = None,
    tf32: bool = True,
    force: bool = False,
    isolate: bool = False,
    log=print,
) -> dict:
    """Build `engine_path` from `onnx_path`, write `NAME.engine.json` beside it, return the manifest.

    `sms`: TensorRT-RTX targets (default 89); `tensorrt` always targets the local GPU. `batch`: MIN:OPT:MAX.
    `tf32`: fp32 layers may use TF32 tensor cores (trtexec's default; False = trtexec --noTF32). Polygraphy
    would clear the flag unless told, so it is always passed and recorded in the manifest.
    Nothing is written unless the build succeeds. Ctrl-C cancels the build through TensorRT's progress monitor,
    which TensorRT only consults between steps (one step of the SMPLer build runs ~40 s); `isolate=True` (the CLI)
    builds in a child process instead, which Ctrl-C stops at once.
    """
    t_start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SmplerError(f"{onnx_path}: ONNX file not found")
    batch = parse_batch(batch)
    pools, hcl = _engine_option_values(mem_pool_size, builder_optimization_level, hardware_compatibility_level)

    trt, flavour = import_trt(flavour)
    title = f"{FLAVOUR_TITLES[flavour]} {trt.__version__}"
    if flavour == "tensorrt-rtx":
        sms = check_sms(sms if sms is not None else DEFAULT_SMS, valid_sms(trt))
    elif sms is not None:
        raise SmplerError("--sm applies to --trt tensorrt-rtx only; --trt tensorrt builds for the local GPU")
    else:
        sms = [s] if (s := _local_sm()) else []
    if hcl != "none" and not hasattr(trt.HardwareCompatibilityLevel, hcl.upper()):
        raise SmplerError(f"--hardware-compatibility-level {hcl}: not available in {title}")

    facts = onnx_facts(onnx_path)
    meta = facts["metadata"]
    if meta.get("precision") in KINDS and not Precision.from_metadata(meta).buildable:
        raise SmplerError(f"{onnx_path}: an int8-cpu graph (ONNX Runtime's layout, non-zero zero points TensorRT "
                          "refuses); build engines from smpler-export --precision int8 --target trt")
    shapes = profile_shapes(facts["shape"], batch, facts["input"])
    destinations = (engine_path, manifest_path(engine_path), layers_path(engine_path))
    with outputs(*destinations, force=force, flag="-o"):  # checked and claimed before any work
        if isolate:
            return _build_in_child(onnx_path, engine_path, log, flavour=flavour, sms=sms, batch=list(batch),
                                   timing_cache=str(timing_cache) if timing_cache else None,
                                   builder_optimization_level=builder_optimization_level, mem_pool_size=mem_pool_size,
                                   version_compatible=version_compatible, hardware_compatibility_level=hcl, tf32=tf32)
        return _build(onnx_path, engine_path, facts, shapes, trt=trt, flavour=flavour, title=title, t_start=t_start, sms=sms,
                      batch=batch, timing_cache=timing_cache, builder_optimization_level=builder_optimization_level,
                      pools=pools, version_compatible=version_compatible, hcl=hcl, tf32=tf32, log=log)


def _build_in_child(onnx_path: Path, engine_path: Path, log, **options) -> dict:
    """Run the build in `python -m smpler_deploy.engine.build_worker` (its own session, so a terminal's Ctrl-C
    reaches only us), into a private staging directory beside the engine; its messages are passed to `log`.
    On Ctrl-C (or any error) the child is killed and its files removed; on success the files are committed
    through the claimed outputs."""
    import shutil
    import subprocess

    stage = stage_dir(engine_path)
    staged = stage / engine_path.name
    job = {"onnx": str(onnx_path), "engine": str(staged), "result": str(stage / "result.json"), **options}
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "smpler_deploy.engine.build_worker", json.dumps(job)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        for line in proc.stderr:
            log(line.rstrip("\n"))
        rc = proc.wait()
        result = json.loads((stage / "result.json").read_text()) if (stage / "result.json").exists() else {}
        if "error" in result:
            raise SmplerError(result["error"])
        if rc != 0 or "manifest" not in result:
            raise SmplerError(f"{onnx_path}: the engine build process failed (exit {rc}); see the messages above")
        for src, dst in ((staged, engine_path), (manifest_path(staged), manifest_path(engine_path)),
                         (layers_path(staged), layers_path(engine_path))):
            with atomic_path(dst) as tmp:
                os.replace(src, tmp)
        return result["manifest"]
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _build(onnx_path, engine_path, facts, shapes, *, trt, flavour, title, t_start, sms, batch, timing_cache,
           builder_optimization_level, pools, version_compatible, hcl, tf32, log) -> dict:
    meta = facts["metadata"]
    registered = []
    if facts["plugins"]:
        # Full TensorRT runs the plugins while timing the build: their kernels for this GPU must be there.
        registered = register_smpler_plugins(trt, flavour, str(onnx_path), facts["plugins"],
                                             sm=sms[0] if flavour == "tensorrt" and sms else None)

    ptrt = _polygraphy_for(flavour)
    from polygraphy.exception import PolygraphyException

    cache_in = Path(timing_cache) if timing_cache else None
    cache_loaded = bool(cache_in and cache_in.is_file() and cache_in.stat().st_size)
    if timing_cache and flavour == "tensorrt-rtx":
        log("  note: TensorRT-RTX treats timing caches as no-ops (since 1.2); the file is kept for TensorRT parity")
    target = f"SM{', SM'.join(map(str, sms))}" if sms else "local GPU"
    with _captured_polygraphy_logs(log) as cap, ExitStack() as stack:
        log(f"[1/3] parsing {onnx_path.name} ({title}, strongly typed)")
        t0 = time.perf_counter()
        try:
            builder, network, parser = ptrt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)()
        except PolygraphyException:
            raise SmplerError(_first_error(cap, f"{onnx_path}: TensorRT could not parse the graph")) from None
        parse_s = time.perf_counter() - t0

        profile = ptrt.Profile().add(facts["input"], shapes["min"], shapes["opt"], shapes["max"])
        common = dict(
            profiles=[profile],
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # needed for the `Layers:` dump
            # An open file, not a path: Polygraphy would leave a `.lock` file beside a path.
            load_timing_cache=stack.enter_context(open(cache_in, "rb")) if cache_loaded else None,
            builder_optimization_level=builder_optimization_level,
            memory_pool_limits={getattr(trt.MemoryPoolType, k): v for k, v in pools.items()} or None,
            version_compatible=version_compatible or None,
            hardware_compatibility_level=getattr(trt.HardwareCompatibilityLevel, hcl.upper()) if hcl != "none" else None,
        )
        try:
            if flavour == "tensorrt-rtx":
                from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

                config = CreateConfigRTX(compute_capabilities=[sm_to_major_minor(s) for s in sms], **common)(builder, network)
            else:
                config = ptrt.CreateConfig(**common)(builder, network)
            # Set either way: Polygraphy's CreateConfig clears TF32 unless told, TensorRT(-RTX) itself defaults it on.
            (config.set_flag if tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
        except PolygraphyException:
            raise SmplerError(_first_error(cap, f"{title}: could not create the builder config")) from None

        batch_txt = ":".join(map(str, batch))
        log(f"[2/3] building engine for {target}, batch {batch_txt} (the slow step)")
        t0 = time.perf_counter()
        monitor = _CancelOnInterrupt(trt, log)
        config.progress_monitor = monitor.monitor
        try:
            with monitor.sigint():
                plan = ptrt.EngineBytesFromNetwork((builder, network, parser), config=config)()
        except PolygraphyException:
            if monitor.cancelled:
                log("interrupt: engine build cancelled; nothing written")
                raise KeyboardInterrupt from None
            raise SmplerError(_first_error(cap, f"{onnx_path}: engine build failed for {target}")) from None
        if monitor.cancelled:  # the build finished before it saw the request: still, nothing is kept
            raise KeyboardInterrupt
        build_s = time.perf_counter() - t0
        plan = bytes(memoryview(plan))
        dump = layer_summary.find_layers_dump(m for _, m in cap.messages)

    records = layer_summary.parse_layers(dump)
    if not records and flavour == "tensorrt":  # full TensorRT logs no `Layers:` dump; it has a GPU to inspect with
        records = _inspect_engine(trt, plan)
    summary = layer_summary.summarize(records)
    io_tensors = {
        "inputs": [{"name": t.name, "shape": _dims(t.shape), "dtype": _dtype_name(t.dtype)}
                   for t in (network.get_input(i) for i in range(network.num_inputs))],
        "outputs": [{"name": t.name, "shape": _dims(t.shape), "dtype": _dtype_name(t.dtype)}
                    for t in (network.get_output(i) for i in range(network.num_outputs))],
    }  # fmt: skip
    timing_out = None
    if timing_cache:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Timing cache operations are no-ops.*")
            cache = config.get_timing_cache()
            data = bytes(memoryview(cache.serialize())) if cache is not None else b""
        timing_out = str(write_bytes_atomic(timing_cache, data))

    log(f"[3/3] writing {engine_path.name} ({len(plan) / 2**20:.1f} MiB) and {manifest_path(engine_path).name}")
    import hashlib

    manifest = {
        "schema": SCHEMA,
        "engine": {"file": engine_path.name, "sha256": hashlib.sha256(plan).hexdigest(), "size": len(plan)},
        "source": {"onnx": str(onnx_path), "sha256": facts["sha256"], "external_data": facts["external_data"]},
        "variant": meta.get("variant"),
        "precision": meta.get("precision"),
        "trt": {"flavour": flavour, "version": trt.__version__},
        "target": {"sms": sms, "hardware_compatibility_level": hcl},
        "profiles": [{facts["input"]: shapes}],
        **io_tensors,
        "plugins": [p | {"registered": p["name"] in registered} for p in facts["plugins"]],
        "build": {
            "seconds": round(build_s, 3),
            "parse_seconds": round(parse_s, 3),
            "total_seconds": None,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "options": {
                "batch": list(batch),
                "strongly_typed": True,
                "builder_optimization_level": builder_optimization_level,
                "mem_pool_size": pools,
                "version_compatible": bool(version_compatible),
                "tf32": bool(tf32),
                "hardware_compatibility_level": hcl,
                "timing_cache": timing_out,
                "timing_cache_loaded": cache_loaded,
                "profiling_verbosity": "DETAILED",
            },
        },
        "layers": summary,
    }
    manifest["build"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
    # Engine, manifest and layer records appear together or not at all: each is committed inside build_engine's
    # `outputs` transaction, which removes all three if any write fails.
    write_bytes_atomic(engine_path, plan)
    write_manifest(engine_path, manifest)
    write_text_atomic(layers_path(engine_path), json.dumps(layer_summary.records_to_json(records), indent=1) + "\n")
    log(f"built {engine_path.name} in {build_s:.1f} s ({summary['layers']} layers)")
    return manifest
