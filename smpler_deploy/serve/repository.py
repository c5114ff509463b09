"""Write a Triton model repository for SMPLer, all at once: staged in a temp directory beside `out`, renamed into
place only when every model and config is written and parsed; on any error nothing is left.

    REPO/smpler_trt/      tensorrt_plan: the engine; max_batch_size from its profile (given an `engine`)
    REPO/smpler_onnx/     onnxruntime: the ONNX graph on CPU or GPU instances
    REPO/smpler_python/   python: the project's ONNX Runtime session (for servers without the onnxruntime backend)
    REPO/smpler_crop/     python: image uint8 [H,W,3] + box [4] -> crop [3,224,224] (smpler_deploy.preprocess)
    REPO/smpler_uncrop/   python: 2D joints -> image pixels
    REPO/smpler/          ensemble: crop -> model -> uncrop; what clients call

The inference models batch dynamically (preferred sizes from the profile, a bounded queue delay); the crop step
does not (images differ in size), so each request reaches the model's batcher on its own and is batched there.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..containment import contained, onnx_external_files
from ..errors import OptionError, SmplerError, opt
from ..export.metadata import read_header
from ..fileio import check_output_tree, staged_dir
from ..outputs import CROP_SIZE, INPUT_NAME, OUTPUT_NAMES
from .model_config import config_text, parse_config, tensor

INFER_MODELS = {"tensorrt": "smpler_trt", "onnxruntime": "smpler_onnx", "python": "smpler_python"}
ENSEMBLE = "smpler"
MODEL_NAMES = (*INFER_MODELS.values(), "smpler_crop", "smpler_uncrop", ENSEMBLE)  # the repository's folders


def owns_repo_entry(name: str) -> bool:
    """`force` replaces a previous repository of ours, never a folder holding anything else (the current
    directory as `out`)."""
    return name in MODEL_NAMES
OUTPUT_DIMS = {"vertices": [6890, 3], "joints": [14, 3], "smpl_joints": [24, 3], "smpl_joints2d": [24, 2],
               "rotmat": [24, 3, 3], "betas": [10], "cam": [3]}  # per item (see outputs.SMPLOutput)
MODEL_PY = '''"""Triton Python-backend model of smpler-deploy (needs `pip install smpler-deploy` in the server's Python)."""

from smpler_deploy.serve.python_model import TritonPythonModel  # noqa: F401
'''


@dataclass
class RepoOptions:
    max_batch: int = 8  # inference models' max_batch_size (an engine's comes from its profile)
    preferred: tuple[int, ...] = ()  # preferred batch sizes (default: the profile's opt and max)
    queue_delay_us: int = 2000  # how long the batcher waits to fill a preferred batch
    instances: int = 1  # instance_group count of each inference model (per GPU for KIND_GPU)
    onnx_device: str = "gpu"  # onnxruntime model instances: gpu | cpu
    ensemble: str | None = None  # which inference model the ensemble runs (default: tensorrt if an engine, else onnxruntime)
    session_threads: int = 0  # python session model: ONNX Runtime threads (0: its default)


@dataclass
class Graph:
    inputs: list[dict]  # tensor() dicts, batch dimension removed
    outputs: list[dict]


def onnx_graph(path: Path, where: str | None = None) -> tuple[Graph, dict[str, Path]]:
    """SMPLer's I/O from an ONNX file (weights not loaded), and its external data files ({location: path}).
    `where`: what the errors name (default: the path; the command passes its flag too)."""
    import onnx

    where = where or str(path)
    m = read_header(path, where)
    init_names = {i.name for i in m.graph.initializer}

    def io(vals):
        out = []
        for v in vals:
            if v.name in init_names:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            out.append({"name": v.name, "dtype": dtype, "shape": dims})
        return out

    external = onnx_external_files(m, path, where)  # each inside the graph's folder, or refused
    if clash := sorted(set(external) & {"model.onnx", "model.py"}):  # what the repository writes beside them
        raise SmplerError(f"{where}: external data location {clash[0]!r} is a name the repository's model "
                          "folder uses itself; save the graph's weights under another name")
    return _graph(io(m.graph.input), io(m.graph.output), where), external


def engine_graph(engine: Path, manifest: dict, where: str | None = None) -> tuple[Graph, tuple[int, int, int]]:
    """SMPLer's I/O and the (min, opt, max) batch of an engine, from its manifest."""
    where = where or str(engine)
    if manifest.get("plugins"):
        names = ", ".join(p.get("name", "?") for p in manifest["plugins"])
        raise SmplerError(f"{where}: built with {opt('plugins')} ({names}); those are Python TensorRT plugins that "
                          "Triton's tensorrt_plan backend cannot load. Build the engine with "
                          f"{opt('no_plugins')}, or serve through the python or onnxruntime model")
    prof = (manifest.get("profiles") or [{}])[0].get(INPUT_NAME)
    if not prof:
        raise SmplerError(f"{where}: the manifest has no optimization profile for input {INPUT_NAME}")
    lo, mid, hi = (prof[k][0] for k in ("min", "opt", "max"))
    if lo != 1:
        raise SmplerError(f"{where}: profile batch min is {lo}; Triton sends batches from 1 to max_batch_size, "
                          f"so build the engine with {opt('batch')} 1:OPT:MAX")
    g = _graph([{**t, "shape": prof["max"]} if t["name"] == INPUT_NAME else t for t in manifest["inputs"]],
               manifest["outputs"], where)
    return g, (lo, mid, hi)


def _graph(inputs, outputs, where) -> Graph:
    names = [t["name"] for t in inputs]
    if names != [INPUT_NAME] or inputs[0]["shape"][1:] != [3, CROP_SIZE, CROP_SIZE] or inputs[0]["dtype"] != "float32":
        raise SmplerError(f"{where}: expected one input {INPUT_NAME} float32 [B,3,{CROP_SIZE},{CROP_SIZE}], got "
                          + ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in inputs))
    if [t["name"] for t in outputs] != list(OUTPUT_NAMES):
        raise SmplerError(f"{where}: expected outputs {', '.join(OUTPUT_NAMES)}, got "
                          + ", ".join(t["name"] for t in outputs))
    fixed = []
    for t in outputs:  # exporters may leave reshaped dims symbolic: SMPLer's contract fills them in
        want, got = OUTPUT_DIMS[t["name"]], t["shape"][1:]
        if len(got) != len(want) or any(g > 0 and g != w for g, w in zip(got, want)):
            raise SmplerError(f"{where}: output {t['name']} has shape {t['shape']}; expected [B,{','.join(map(str, want))}]")
        fixed.append({**t, "shape": [t["shape"][0], *want]})
    strip = lambda ts: [tensor(t["name"], t["dtype"], t["shape"][1:]) for t in ts]  # noqa: E731
    return Graph(strip(inputs), strip(fixed))


def _batching(preferred, max_batch, delay_us) -> dict:
    sizes = sorted({b for b in preferred if 1 < b <= max_batch}) or [max_batch]
    return {"preferred_batch_size": sizes, "max_queue_delay_microseconds": int(delay_us)}


def model_configs(graph: Graph, opts: RepoOptions, engine_batch: tuple[int, int, int] | None,
                  onnx_present: bool = True) -> dict[str, dict]:
    """Every model's config (dicts in ModelConfig's JSON field names), keyed by model name."""
    ensemble = opts.ensemble or ("tensorrt" if engine_batch else "onnxruntime")
    if ensemble == "tensorrt" and not engine_batch:
        raise OptionError("ensemble", "tensorrt", f"needs {opt('engine')} (an engine built with {opt('no_plugins')})")
    if ensemble not in INFER_MODELS:
        raise OptionError("ensemble", ensemble, f"expected one of {', '.join(INFER_MODELS)}")
    if opts.onnx_device not in ("cpu", "gpu"):
        raise OptionError("onnx_device", opts.onnx_device, "expected cpu or gpu")
    if opts.instances < 1 or opts.max_batch < 1 or opts.queue_delay_us < 0:
        raise SmplerError(f"{opt('instances')} and the max batch must be >= 1, the queue delay >= 0")
    io = {"input": graph.inputs, "output": graph.outputs}
    default_pref = (engine_batch[1], engine_batch[2]) if engine_batch else (opts.max_batch,)
    pref = opts.preferred or default_pref
    cfgs: dict[str, dict] = {}

    def batched(name, mb, kind, **fields):  # an inference model: the graph's I/O, dynamic batching, instances
        cfgs[name] = {"name": name, **fields, "max_batch_size": mb, **io,
                      "dynamic_batching": _batching(pref, mb, opts.queue_delay_us),
                      "instance_group": [{"kind": kind, "count": opts.instances}]}

    if engine_batch:
        batched("smpler_trt", engine_batch[2], "KIND_GPU", platform="tensorrt_plan")
    if onnx_present:
        mb = opts.max_batch
        batched("smpler_onnx", mb, "KIND_GPU" if opts.onnx_device == "gpu" else "KIND_CPU",
                backend="onnxruntime", platform="onnxruntime_onnx")
        if ensemble == "python":
            batched("smpler_python", mb, "KIND_CPU", backend="python",
                    parameters={"stage": {"string_value": "session"},
                                "threads": {"string_value": str(opts.session_threads)}})
    infer = INFER_MODELS[ensemble]
    if infer not in cfgs:
        raise OptionError("ensemble", ensemble, "that model is not in the repository")
    mb = cfgs[infer]["max_batch_size"]
    j2d = next(t for t in graph.outputs if t["name"] == "smpl_joints2d")
    crop_t = tensor("crop", "float32", [3])
    image_t, box_t = tensor("image", "uint8", [-1, -1, 3]), tensor("box", "float32", [4])
    joints_img = tensor("joints2d_image", "float32", j2d["dims"])
    cpu1 = [{"kind": "KIND_CPU", "count": 1}]
    cfgs["smpler_crop"] = {"name": "smpler_crop", "backend": "python", "max_batch_size": mb,
                           "input": [image_t, box_t], "output": [graph.inputs[0], crop_t], "instance_group": cpu1,
                           "parameters": {"stage": {"string_value": "crop"}}}
    cfgs["smpler_uncrop"] = {"name": "smpler_uncrop", "backend": "python", "max_batch_size": mb,
                             "input": [j2d, crop_t], "output": [joints_img],
                             "instance_group": cpu1, "parameters": {"stage": {"string_value": "uncrop"}}}
    cfgs[ENSEMBLE] = {
        "name": ENSEMBLE, "platform": "ensemble", "max_batch_size": mb, "input": [image_t, box_t],
        "output": [*graph.outputs, joints_img],
        "ensemble_scheduling": {"step": [
            {"model_name": "smpler_crop", "model_version": -1, "input_map": {"image": "image", "box": "box"},
             "output_map": {INPUT_NAME: "crop_images", "crop": "crop_box"}},
            {"model_name": infer, "model_version": -1, "input_map": {INPUT_NAME: "crop_images"},
             "output_map": {n: n for n in OUTPUT_NAMES}},
            {"model_name": "smpler_uncrop", "model_version": -1,
             "input_map": {"smpl_joints2d": "smpl_joints2d", "crop": "crop_box"},
             "output_map": {"joints2d_image": "joints2d_image"}},
        ]}}
    return cfgs


def _copy_onnx(src: Path, external: dict[str, Path], dst_dir: Path, where: str) -> None:
    """The graph and its external weights (same relative names, checked by `onnx_graph` to stay inside the graph's
    folder, so inside `dst_dir` too)."""
    shutil.copyfile(src, dst_dir / "model.onnx")
    for rel, source in external.items():
        target = contained(dst_dir, rel, what=f"{where}: external data location")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_repository(out, *, onnx=None, engine=None, opts: RepoOptions | None = None, force: bool = False,
                     log=lambda msg: None, onnx_where: str | None = None,
                     engine_where: str | None = None) -> dict[str, dict]:
    """Write the repository to `out` (a directory); returns the configs written. Checked before any copying.
    onnx_where / engine_where: what errors about the graph / the engine name (default: the path)."""
    opts = opts or RepoOptions()
    out = Path(out)
    onnx_where = onnx_where or (str(onnx) if onnx is not None else None)
    engine_where = engine_where or (str(engine) if engine is not None else None)
    check_output_tree(out, force, opt("out"), owns_repo_entry)  # a non-empty directory is replaced only with `force`
    if onnx is None and engine is None:
        raise OptionError("format", "triton", f"needs a graph ({opt('onnx')}, or let smpler-export export one) or "
                          f"{opt('engine')}")
    graph = external = engine_batch = None
    if onnx is not None:
        graph, external = onnx_graph(Path(onnx), onnx_where)
    if engine is not None:
        from ..trt.manifest import check_engine_file, read_manifest

        engine = Path(engine)
        if not engine.is_file():
            raise SmplerError(f"{engine_where}: file not found")
        manifest = read_manifest(engine)
        check_engine_file(manifest, engine, engine_where)  # a truncated or replaced engine is not served
        egraph, engine_batch = engine_graph(engine, manifest, engine_where)
        if graph is not None and [t["dims"] for t in egraph.outputs] != [t["dims"] for t in graph.outputs]:
            raise SmplerError(f"{engine_where}: its outputs' shapes differ from {onnx_where}'s")
        graph = graph or egraph
    cfgs = model_configs(graph, opts, engine_batch, onnx_present=onnx is not None)

    with staged_dir(out, force=force, flag=opt("out"), owns=owns_repo_entry) as stage:  # renamed into place once every model is in
        for name, cfg in cfgs.items():
            vdir = stage / name / "1"
            vdir.mkdir(parents=True)
            text = config_text(cfg)
            parse_config(text, f"{name}/config.pbtxt")  # what Triton will read, read back
            (stage / name / "config.pbtxt").write_text(text)
            if name == "smpler_trt":
                log(f"copying {engine} -> {name}/1/model.plan")
                shutil.copyfile(engine, vdir / "model.plan")
            elif name in ("smpler_onnx", "smpler_python"):
                log(f"copying {onnx} -> {name}/1/model.onnx")
                _copy_onnx(Path(onnx), external, vdir, onnx_where)
            if cfg.get("backend") == "python":
                (vdir / "model.py").write_text(MODEL_PY)
    return cfgs
