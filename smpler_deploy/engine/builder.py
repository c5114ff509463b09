"""ONNX -> TensorRT / TensorRT-RTX engine, strongly typed, through Polygraphy's loaders, plus its manifest.

Precision lives in the ONNX graph (Casts, Q/DQ), so no precision builder flags are set and the same code builds
on TensorRT 10.3 (Jetson), 11.x and TensorRT-RTX. How to build is one `options.EngineOptions`, checked there;
only `build_engine` touches TensorRT.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

from ..errors import OptionError, SmplerError, opt
from ..fileio import atomic_path, outputs, sha256_file, stage_dir, write_bytes_atomic, write_text_atomic
from ..outputs import INPUT_NAME
from ..precision import GRAPH_KINDS, Precision
from . import layer_summary
from ..trt.manifest import FLAVOUR_TITLES, SCHEMA, layers_path, manifest_path, write_manifest
from ..plugins.graph import plugin_summary
from ..trt.dtypes import dtype_name
from ..trt.importer import import_trt
from ..trt.plugins import register_smpler_plugins
from .options import EngineOptions, parse_mem_pool_size, resolve
from .polygraphy_glue import _CancelOnInterrupt, _captured_polygraphy_logs, _first_error, _polygraphy_for

# ---------------------------------------------------------------- pure helpers


def sm_to_major_minor(sm: int) -> tuple[int, int]:
    return sm // 10, sm % 10  # 89 -> (8, 9), 120 -> (12, 0)


def profile_shapes(onnx_shape: list, batch: tuple[int, int, int], name: str) -> dict[str, list[int]]:
    """MIN/OPT/MAX shapes from the ONNX input shape (dim 0 = batch; every other dim must be fixed)."""
    rest = onnx_shape[1:]
    if not onnx_shape or any(not isinstance(d, int) or d <= 0 for d in rest):
        raise SmplerError(f"input {name}: only the batch dimension may be dynamic, got {onnx_shape}")
    if isinstance(onnx_shape[0], int) and onnx_shape[0] > 0 and batch != (onnx_shape[0],) * 3:
        raise OptionError("batch", ":".join(map(str, batch)),
                          f"the ONNX input {name} has a fixed batch of {onnx_shape[0]}")
    return {k: [b, *rest] for k, b in zip(("min", "opt", "max"), batch)}


def onnx_facts(onnx_path: str | os.PathLike) -> dict:
    """What the build and the manifest need from the ONNX file, without loading external weights."""
    from ..containment import onnx_external_files
    from ..export.metadata import metadata, read_header

    model = read_header(onnx_path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise SmplerError(f"{onnx_path}: the graph has no inputs")
    if len(inputs) > 1:
        raise SmplerError(f"{onnx_path}: expected one input ({INPUT_NAME}), got {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim]
    # TensorRT's parser opens every external-data file the graph names: each must lie inside the graph's folder
    ext = onnx_external_files(model, onnx_path, str(onnx_path))
    meta = metadata(model)
    return {
        "path": str(onnx_path),
        "input": inputs[0].name,
        "shape": dims,
        "metadata": meta,
        "plugins": plugin_summary(model),
        "sha256": sha256_file(onnx_path),
        "external_data": {loc: sha256_file(path) for loc, path in ext.items()},
    }


def _dims(d) -> list[int]:
    return [int(x) for x in d]


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


def build_engine(onnx_path, engine_path, options: EngineOptions = EngineOptions(), *, kernel_dir=None,
                 force: bool = False, isolate: bool = False, log=print) -> dict:
    """Build `engine_path` from `onnx_path` as `options` say, write `NAME.engine.json` beside it, return the
    manifest (its `build.options` is `options` resolved: flavour, targets, canonical spellings).

    `options.sms`: TensorRT-RTX targets (default 89); `tensorrt` always targets the local GPU. `options.tf32`:
    fp32 layers may use TF32 tensor cores (trtexec's default); Polygraphy would clear the flag unless told, so it
    is always set. `kernel_dir`: the plugins' AOT kernels, which a full TensorRT build runs while timing
    (None: the smpler-aot cache directory).
    Nothing is written unless the build succeeds. Ctrl-C cancels the build through TensorRT's progress monitor,
    which TensorRT only consults between steps (one step of the SMPLer build runs ~40 s); `isolate=True` (the CLI)
    builds in a child process instead, which Ctrl-C stops at once.
    """
    t_start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SmplerError(f"{onnx_path}: ONNX file not found")
    trt, flavour = import_trt(options.flavour)
    opts = resolve(options, trt, flavour, _local_sm() if flavour == "tensorrt" else None)
    facts = onnx_facts(onnx_path)
    meta = facts["metadata"]
    if meta.get("precision") in GRAPH_KINDS:
        Precision.from_metadata(meta).require_buildable(str(onnx_path))
    shapes = profile_shapes(facts["shape"], tuple(opts.batch), facts["input"])
    destinations = (engine_path, manifest_path(engine_path), layers_path(engine_path))
    with outputs(*destinations, force=force, flag=opt("out")):  # checked and claimed before any work
        if isolate:
            return _build_in_child(onnx_path, engine_path, opts, kernel_dir, log)
        return _build(onnx_path, engine_path, facts, shapes, opts, trt, kernel_dir, t_start, log)


def _build_in_child(onnx_path: Path, engine_path: Path, opts: EngineOptions, kernel_dir, log) -> dict:
    """Run the build in `python -m smpler_deploy.engine.build_worker` (its own session, so a terminal's Ctrl-C
    reaches only us), into a private staging directory beside the engine; its messages are passed to `log`.
    The options travel as one JSON object (`EngineOptions.to_json`). On Ctrl-C (or any error) the child is
    killed and its files removed; on success the files are committed through the claimed outputs."""
    import shutil
    import subprocess

    stage = stage_dir(engine_path)
    staged = stage / engine_path.name
    job = {"onnx": str(onnx_path), "engine": str(staged), "result": str(stage / "result.json"),
           "kernel_dir": str(kernel_dir) if kernel_dir else None, "options": opts.to_json()}
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


def _build(onnx_path: Path, engine_path: Path, facts: dict, shapes: dict, opts: EngineOptions, trt, kernel_dir,
           t_start: float, log) -> dict:
    """Parse, configure, build (`_build_plan`), then write the engine, its manifest and layer records together."""
    registered = []
    if facts["plugins"]:
        # Full TensorRT runs the plugins while timing the build: their kernels for this GPU must be there.
        sm = opts.sms[0] if opts.flavour == "tensorrt" and opts.sms else None
        registered = register_smpler_plugins(trt, opts.flavour, str(onnx_path), facts["plugins"],
                                             kernel_dir=kernel_dir, sm=sm)
    if opts.timing_cache and opts.flavour == "tensorrt-rtx":
        log("  note: TensorRT-RTX treats timing caches as no-ops (since 1.2); the file is kept for TensorRT parity")
    built = _build_plan(onnx_path, facts, shapes, opts, trt, log)
    records = layer_summary.parse_layers(built["dump"])
    if not records and opts.flavour == "tensorrt":  # full TensorRT logs no `Layers:` dump; it has a GPU to inspect
        records = _inspect_engine(trt, built["plan"])
    if opts.timing_cache:
        write_bytes_atomic(opts.timing_cache, built["timing_cache"])
    plan = built["plan"]
    log(f"[3/3] writing {engine_path.name} ({len(plan) / 2**20:.1f} MiB) and {manifest_path(engine_path).name}")
    manifest = _manifest(engine_path, facts, shapes, opts, trt, built, registered, records)
    manifest["build"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
    # Engine, manifest and layer records appear together or not at all: each is committed inside build_engine's
    # `outputs` transaction, which removes all three if any write fails.
    write_bytes_atomic(engine_path, plan)
    write_manifest(engine_path, manifest)
    write_text_atomic(layers_path(engine_path), json.dumps(layer_summary.records_to_json(records), indent=1) + "\n")
    log(f"built {engine_path.name} in {built['build_s']:.1f} s ({manifest['layers']['layers']} layers)")
    return manifest


def _create_config(ptrt, trt, opts: EngineOptions, builder, network, profile, cache_file):
    """The builder config: Polygraphy's CreateConfig (CreateConfigRTX with the compute capabilities), TF32 set."""
    hcl = opts.hardware_compatibility_level
    pools = parse_mem_pool_size(opts.mem_pool_size)
    common = dict(
        profiles=[profile],
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # needed for the `Layers:` dump
        load_timing_cache=cache_file,
        builder_optimization_level=opts.builder_optimization_level,
        memory_pool_limits={getattr(trt.MemoryPoolType, k): v for k, v in pools.items()} or None,
        version_compatible=opts.version_compatible or None,
        hardware_compatibility_level=getattr(trt.HardwareCompatibilityLevel, hcl.upper()) if hcl != "none" else None,
    )
    if opts.flavour == "tensorrt-rtx":
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        ccs = [sm_to_major_minor(s) for s in opts.sms]
        config = CreateConfigRTX(compute_capabilities=ccs, **common)(builder, network)
    else:
        config = ptrt.CreateConfig(**common)(builder, network)
    # Set either way: Polygraphy's CreateConfig clears TF32 unless told, TensorRT(-RTX) itself defaults it on.
    (config.set_flag if opts.tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
    return config


def _build_plan(onnx_path: Path, facts: dict, shapes: dict, opts: EngineOptions, trt, log) -> dict:
    """Parse and build under captured logs: the plan bytes, the network's I/O, the `Layers:` dump, timings."""
    ptrt = _polygraphy_for(opts.flavour)
    from polygraphy.exception import PolygraphyException

    title = f"{FLAVOUR_TITLES[opts.flavour]} {trt.__version__}"
    cache_in = Path(opts.timing_cache) if opts.timing_cache else None
    cache_loaded = bool(cache_in and cache_in.is_file() and cache_in.stat().st_size)
    target = f"SM{', SM'.join(map(str, opts.sms))}" if opts.sms else "local GPU"
    with _captured_polygraphy_logs(log) as cap, ExitStack() as stack:
        log(f"[1/3] parsing {onnx_path.name} ({title}, strongly typed)")
        t0 = time.perf_counter()
        try:
            builder, network, parser = ptrt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)()
        except PolygraphyException:
            raise SmplerError(_first_error(cap, f"{onnx_path}: TensorRT could not parse the graph")) from None
        parse_s = time.perf_counter() - t0
        profile = ptrt.Profile().add(facts["input"], shapes["min"], shapes["opt"], shapes["max"])
        # An open file, not a path: Polygraphy would leave a `.lock` file beside a path.
        cache_file = stack.enter_context(open(cache_in, "rb")) if cache_loaded else None
        try:
            config = _create_config(ptrt, trt, opts, builder, network, profile, cache_file)
        except PolygraphyException:
            raise SmplerError(_first_error(cap, f"{title}: could not create the builder config")) from None

        log(f"[2/3] building engine for {target}, batch {':'.join(map(str, opts.batch))} (the slow step)")
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
        dump = layer_summary.find_layers_dump(m for _, m in cap.messages)
    timing = None
    if opts.timing_cache:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Timing cache operations are no-ops.*")
            cache = config.get_timing_cache()
            timing = bytes(memoryview(cache.serialize())) if cache is not None else b""
    io = {kind: [{"name": t.name, "shape": _dims(t.shape), "dtype": dtype_name(t.dtype)}
                 for t in (get(i) for i in range(n))]
          for kind, get, n in (("inputs", network.get_input, network.num_inputs),
                               ("outputs", network.get_output, network.num_outputs))}
    return {"plan": bytes(memoryview(plan)), "io": io, "dump": dump, "build_s": build_s, "parse_s": parse_s,
            "cache_loaded": cache_loaded, "timing_cache": timing}


def _manifest(engine_path: Path, facts: dict, shapes: dict, opts: EngineOptions, trt, built: dict,
              registered: list[str], records: list) -> dict:
    import hashlib

    plan, meta = built["plan"], facts["metadata"]
    return {
        "schema": SCHEMA,
        "engine": {"file": engine_path.name, "sha256": hashlib.sha256(plan).hexdigest(), "size": len(plan)},
        "source": {"onnx": str(facts["path"]), "sha256": facts["sha256"], "external_data": facts["external_data"]},
        "variant": meta.get("variant"),
        "precision": meta.get("precision"),
        "trt": {"flavour": opts.flavour, "version": trt.__version__},
        "target": {"sms": list(opts.sms), "hardware_compatibility_level": opts.hardware_compatibility_level},
        "profiles": [{facts["input"]: shapes}],
        **built["io"],
        "plugins": [p | {"registered": p["name"] in registered} for p in facts["plugins"]],
        "build": {
            "seconds": round(built["build_s"], 3),
            "parse_seconds": round(built["parse_s"], 3),
            "total_seconds": None,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "options": opts.to_json(),  # the resolved EngineOptions, field for field
            # What the options became: strongly typed always, the parsed memory pools, the cache read or not.
            "strongly_typed": True,
            "profiling_verbosity": "DETAILED",
            "memory_pools": parse_mem_pool_size(opts.mem_pool_size),
            "timing_cache_loaded": built["cache_loaded"],
        },
        "layers": layer_summary.summarize(records),
    }
