"""The benchmark's plan: what the user asked for (`BenchConfig`, the flag parsers the CLI shares), what this machine
can run (`BenchEnv`), and the cells in run order (`plan`: one `Group` per session spec, each cell that cannot run
here already carrying its skip reason). `runner.py` opens the sessions and times the cells."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError, SmplerError, opt
from ..precision import FP32, NAMES, Precision
from .report import MODEL_GFLOPS, Cell

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Precisions (precision.NAMES): "int8" is the TensorRT layout (symmetric Q/DQ; fake-quantized on ONNX Runtime: its
# fidelity is the engine's), "int8-cpu" ONNX Runtime's own fused layout (what CPU users run for speed; TensorRT
# refuses its zero points), "bf16" runs in torch only (the fp16 policy in bfloat16).
VARIANTS = tuple(MODEL_GFLOPS)


# --- argument parsing (shared with the CLI; one-line errors naming the flag) -----------------------------------

def parse_choices(text: str, allowed, flag: str) -> list[str]:
    items = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not items:
        raise SmplerError(f"{flag}: empty list; expected some of {','.join(allowed)}")
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SmplerError(f"{flag}: unknown {', '.join(bad)}; expected some of {','.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_precisions(text: str, flag: str = "precisions") -> list[Precision]:
    """A comma list of report spellings (precision.NAMES) -> Precisions, in order, each once."""
    return list(dict.fromkeys(Precision.parse(t, flag) for t in parse_choices(text, NAMES, flag)))


def parse_batches(text: str, flag: str = "batch") -> list[int]:
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise OptionError(flag, text, "expected comma-separated positive integers, e.g. 1,8")
    if not vals or any(v < 1 for v in vals):
        raise OptionError(flag, text, "expected comma-separated positive integers, e.g. 1,8")
    return sorted(set(vals))


def parse_artifacts(text: str | None, flag: str, kind: str | None = None) -> dict[Precision, Path]:
    """`PREC=PATH,...` or plain paths whose metadata (graph) or manifest (engine) names the precision.
    kind: "onnx" or "engine" (default: "engine" when `flag` names one)."""
    kind = kind or ("engine" if flag.endswith("engine") else "onnx")
    out: dict[Precision, Path] = {}
    for item in [t.strip() for t in (text or "").split(",") if t.strip()]:
        if "=" in item:
            name, path = (s.strip() for s in item.split("=", 1))
            if name.lower() not in NAMES:
                raise SmplerError(f"{flag} {item}: unknown precision {name}; expected {','.join(NAMES)}")
            prec = Precision.parse(name, flag)
        else:
            from ..artifacts import artifact_facts

            path = item
            prec = artifact_facts(item, kind, f"{flag} {item}")[0]  # what the graph's metadata / manifest says
        p = Path(path)
        if not p.is_file():
            raise SmplerError(f"{flag} {p}: file not found")
        if prec in out:
            raise SmplerError(f"{flag}: two files for {prec} ({out[prec]}, {p}); write PREC=PATH")
        out[prec] = p
    return out


def gpu_available() -> bool:
    from .machine import gpu_info

    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return bool(gpu_info())


def tensorrt_importable() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))


# --- the matrix --------------------------------------------------------------------------------------------------

DEVICES = ("cpu", "cuda")


@dataclass
class BenchConfig:
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precisions: list[Precision] = field(default_factory=lambda: [FP32])
    batches: list[int] = field(default_factory=lambda: [1])
    iters: int = 20
    warmup: int = 3
    threads: int | None = None
    variant: str = "smpler"
    onnx: dict = field(default_factory=dict)  # Precision -> Path
    engines: dict = field(default_factory=dict)  # Precision -> Path
    cache_dir: Path | None = None  # where missing ONNX files are exported
    seed: int = 0
    progress: bool = True
    measure_gemm: bool = True
    dataset: object | None = None  # dataset.EvalSet
    images_root: Path | None = None
    body_fn: object | None = None
    j_regressor_h36m: object | None = None
    session_kw: dict = field(default_factory=dict)  # extra open_session kwargs (checkpoint, smpl_model, ...)
    command: str = ""
    # Where every cell runs. cuda: baselines, torch, ONNX Runtime (cuda/tensorrt EPs) and engines all on one GPU,
    # so no GPU cell is ever set against a CPU baseline; cpu: GPU-only cells are skipped.
    device: str = "cpu"
    providers: list[str] | None = None  # ONNX Runtime EPs; None = cpu on device cpu, cuda+tensorrt on cuda
    cuda_graphs: bool = True  # device cuda: add torch CUDA-graph cells
    trt_cache: Path | None = None  # TensorRT EP engine/timing cache (default cache_dir/ort-trt)
    trt_fp16: bool = False
    official_repo: Path | None = None  # a checkout of the official repository: its own forward, one more baseline
    kernel_dir: Path | None = None  # AOT kernels for engines built with `plugins` (None: the smpler-aot cache)

    def __post_init__(self):  # report spellings parsed once, here: typed from now on
        self.precisions = list(dict.fromkeys(Precision.parse(p, "precisions") for p in self.precisions))
        self.onnx = {Precision.parse(k, "onnx"): Path(v) for k, v in self.onnx.items()}
        self.engines = {Precision.parse(k, "engines"): Path(v) for k, v in self.engines.items()}


@dataclass
class Group:
    """One session spec, timed at every batch size. `backend` is the cell label (e.g. onnxruntime-cuda),
    `runtime` the open_session backend, `kw` its extra options."""

    backend: str
    precision: Precision
    kind: str
    cells: list[Cell]
    reason: str | None = None
    artifact: Path | None = None
    runtime: str = ""
    kw: dict = field(default_factory=dict)

    def __post_init__(self):
        self.runtime = self.runtime or self.backend
        self.precision = Precision.parse(self.precision)


@dataclass
class BenchEnv:
    """What this machine can run (probed once; injected in tests)."""

    cuda: str | None  # None: torch can use a CUDA device; else why not
    ort_providers: list[str]
    tensorrt: bool

    @classmethod
    def probe(cls, device: str) -> "BenchEnv":
        import onnxruntime as ort

        from ..runtime.torch_plan import cuda_unavailable_reason

        return cls(cuda_unavailable_reason() if device == "cuda" else (None if gpu_available() else "no CUDA GPU"),
                   list(ort.get_available_providers()), tensorrt_importable())


def plan(cfg: BenchConfig, env: BenchEnv | None = None) -> list[Group]:
    """All groups in run order (reference first: its outputs are what the others are compared with).

    Raises SmplerError when the user named artifacts but not one a requested cell needs, or asked for a device
    or provider this machine lacks in a way that no cell could run (device cuda without CUDA)."""
    from ..runtime.ort_providers import check_available, parse_provider

    env = env or BenchEnv.probe(cfg.device)
    on_gpu = cfg.device == "cuda"
    if cfg.device not in DEVICES:
        raise OptionError("device", cfg.device, f"expected one of {', '.join(DEVICES)}")
    if on_gpu and env.cuda:
        raise OptionError("device", "cuda", f"{env.cuda}; use {opt('device')} cpu")
    providers = [parse_provider(p) for p in (cfg.providers or (["cuda", "tensorrt"] if on_gpu else ["cpu"]))]
    for p in providers:
        if (p == "cpu") == on_gpu:
            raise OptionError("provider", p, f"{'a CPU' if p == 'cpu' else 'a GPU'} provider with {opt('device')} "
                              f"{cfg.device}; every cell of one report runs on one device (its baseline's), so "
                              f"use {opt('device')} {'cpu' if p == 'cpu' else 'cuda'}")
    if cfg.trt_fp16 and "tensorrt" not in providers:
        raise OptionError("trt_fp16", None, f"applies to the tensorrt provider ({opt('device')} cuda "
                          f"{opt('provider')} tensorrt)")
    tkw = {"device": cfg.device, "cuda_graphs": False} if on_gpu else {}
    mk = lambda be, pr, kind, **g: Group(be, pr, kind, [Cell(be, pr, b, kind) for b in cfg.batches], **g)  # noqa: E731
    groups = [mk("torch", FP32, "reference", kw=dict(tkw)), mk("torch", FP32, "official", kw=dict(tkw))]
    if cfg.official_repo is not None:  # after the reference: its outputs are compared with the reference's
        groups.append(mk("torch", FP32, "official-repo", runtime="official-repo", kw={"device": cfg.device}))
    for be in cfg.backends:
        for pr in cfg.precisions:
            if be == "torch":
                if not pr.runs_in_torch:
                    groups.append(mk(be, pr, "deployed", reason=pr.not_in_torch_reason))
                    continue
                if pr != FP32:  # fp32 eager is the reference cell
                    groups.append(mk(be, pr, "deployed", kw=dict(tkw, precision=pr)))
                if on_gpu and cfg.cuda_graphs:
                    groups.append(mk("torch-cudagraph", pr, "deployed", runtime="torch",
                                     kw=dict(tkw, precision=pr, cuda_graphs=True)))
            elif be == "onnxruntime":
                for prov in providers:
                    label = "onnxruntime" if prov == "cpu" else f"onnxruntime-{prov}"
                    g = mk(label, pr, "deployed", runtime="onnxruntime", kw={"provider": prov})
                    groups.append(g)
                    if not pr.in_graph or (prov == "tensorrt" and not pr.buildable):
                        g.reason = pr.not_buildable_reason
                        continue
                    try:
                        check_available(prov, env.ort_providers)
                    except SmplerError as e:
                        g.reason = str(e).split(": ", 1)[1]
                        continue
                    if cfg.onnx and pr not in cfg.onnx:
                        raise SmplerError(f"cell onnxruntime/{pr}: no ONNX file for {pr} in {opt('onnx')} "
                                          f"(have {', '.join(sorted(map(str, cfg.onnx)))}); add {pr}=PATH")
                    g.artifact = cfg.onnx.get(pr)
                    if prov == "tensorrt":
                        cache = cfg.trt_cache or (cfg.cache_dir or Path("bench-cache")) / "ort-trt"
                        g.kw |= {"trt_cache": cache, "trt_fp16": cfg.trt_fp16, "batches": tuple(cfg.batches)}
                    elif prov == "cuda":
                        g.kw |= {"batches": tuple(cfg.batches)}
            elif be == "tensorrt":
                g = mk(be, pr, "deployed")
                groups.append(g)
                if not pr.buildable:
                    g.reason = pr.not_buildable_reason
                elif not on_gpu:
                    g.reason = ("no CUDA GPU on this machine (TensorRT engines run only on a GPU)" if env.cuda else
                                "runs on the GPU: measure it with --device cuda, where its baseline is the "
                                "official-style forward on the same GPU")
                elif not env.tensorrt:
                    g.reason = "TensorRT Python package not installed (pip install smpler-deploy[trt])"
                elif pr not in cfg.engines:
                    raise SmplerError(f"cell tensorrt/{pr}: no engine for {pr}; pass {opt('engine')} {pr}=PATH "
                                      "(build one with smpler-export --format engine)")
                else:
                    g.artifact = cfg.engines[pr]
    return groups

