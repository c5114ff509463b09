"""Micro-benchmark: where the official-style baseline and our reference spend their time, stage by stage.

Times one forward of each implementation with every stage clocked in place (hooks around the stage's call, so
each stage sees its real inputs): the backbone, each refinement block's preparation (feature projection,
sampling, query injection: the block minus its units), each transformer unit (3 blocks x 2), all SMPL
evaluations together (official: the full mesh 4x; reference: joints only 3x + the mesh once), and the rest
(regressor, query init, predictors). Implementations, run interleaved (one forward of each per round, so a
loaded machine slows them alike):

* `official-style`: our transcription of the official forward (`load_model(..., official_style=True)`);
* `reference`: our PyTorch fp32 model;
* `official-repo` (with --official-repo PATH): the official repository's own forward, same weights.

Usage: python benchmarks/official_stages.py [--batch 1,8] [--iters 10] [--threads 2] [--checkpoint PT]
       [--official-repo PATH] [--out benchmarks/reports/official_stages]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from smpler_deploy import load_model
from smpler_deploy.bench.machine import cpu_model
from smpler_deploy.fileio import write_text_atomic
from smpler_deploy.model import official_style
from smpler_deploy.model.checkpoint import calibration_batch

NUM_BLOCKS, NUM_UNITS = 3, 2


class StageClock:
    """Accumulates wall time per stage name within one forward (stages may nest: a block holds its units)."""

    def __init__(self):
        self.times: dict[str, float] = defaultdict(float)
        self._open: dict[str, float] = {}

    def start(self, name: str) -> None:
        self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self.times[name] += time.perf_counter() - self._open.pop(name)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            self.start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(name)
        return timed

    def hook(self, module, name: str) -> list:
        return [module.register_forward_pre_hook(lambda *_: self.start(name)),
                module.register_forward_hook(lambda *_: self.stop(name))]


def _module_stages(model, clock: StageClock) -> list:
    """Hooks on the modules both our model and the official one have under the same names."""
    handles = clock.hook(model.backbone, "backbone") + clock.hook(model.smpl_handler, "smpl")
    for i, blk in enumerate(model.transformer):
        handles += clock.hook(blk, f"block{i}")
        for u, unit in enumerate(blk.trans_block.trans_units):
            handles += clock.hook(unit, f"block{i}.unit{u}")
    return handles


@contextlib.contextmanager
def reference_clock(model, clock: StageClock):
    handles = _module_stages(model, clock)
    h = model.smpl_handler
    h.joints2d = clock.wrap("smpl", h.joints2d)  # the joints-only stages (an instance attribute shadows the method)
    try:
        yield
    finally:
        del h.joints2d
        for x in handles:
            x.remove()


@contextlib.contextmanager
def official_style_clock(model, clock: StageClock):
    """The transcription calls its stages as functions of official_style (looked up at call time)."""
    saved = {n: getattr(official_style, n) for n in ("smpl_mesh", "block_forward", "unit_forward")}
    units = {id(u): f"block{i}.unit{k}" for i, b in enumerate(model.transformer)
             for k, u in enumerate(b.trans_block.trans_units)}
    blocks = {id(b): f"block{i}" for i, b in enumerate(model.transformer)}
    backbone = clock.hook(model.backbone, "backbone")

    def block_forward(blk, *a):
        return clock.wrap(blocks[id(blk)], saved["block_forward"])(blk, *a)

    def unit_forward(unit, *a):
        return clock.wrap(units[id(unit)], saved["unit_forward"])(unit, *a)

    official_style.smpl_mesh = clock.wrap("smpl", saved["smpl_mesh"])
    official_style.block_forward, official_style.unit_forward = block_forward, unit_forward
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(official_style, n, f)
        for x in backbone:
            x.remove()


def stage_row(times: dict[str, float], total: float) -> dict[str, float]:
    """Per-stage ms with each block's preparation (block minus its units) and the rest (total minus stages)."""
    row = {"backbone": times["backbone"]}
    for i in range(NUM_BLOCKS):
        units = [times[f"block{i}.unit{u}"] for u in range(NUM_UNITS)]
        row[f"block{i}.prep"] = times[f"block{i}"] - sum(units)
        row |= {f"block{i}.unit{u}": t for u, t in enumerate(units)}
    row["smpl"] = times["smpl"]
    row["rest"] = total - times["backbone"] - sum(times[f"block{i}"] for i in range(NUM_BLOCKS)) - times["smpl"]
    row["total"] = total
    return {k: v * 1000 for k, v in row.items()}


def measure(impls: dict, x: torch.Tensor, iters: int) -> dict[str, dict[str, float]]:
    """impls: name -> (forward, clock context factory). Median per stage over interleaved rounds."""
    rows = defaultdict(list)
    with torch.inference_mode():
        for fwd, _ in impls.values():
            fwd(x)  # warm-up
        for _ in range(iters):
            for name, (fwd, clocked) in impls.items():
                clock = StageClock()
                with clocked(clock):
                    t0 = time.perf_counter()
                    fwd(x)
                    total = time.perf_counter() - t0
                rows[name].append(stage_row(clock.times, total))
    return {name: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="official-layout checkpoint (default: our default model)")
    ap.add_argument("--official-repo", default=None, help="a checkout of the official repository: its forward too")
    ap.add_argument("--out", default="benchmarks/reports/official_stages")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("smpler", checkpoint=a.checkpoint)

    def transcription(x):  # the same weights, the official-style path
        model.official_style = True
        try:
            return model(x)
        finally:
            model.official_style = False

    impls = {"official-style": (transcription, lambda c: official_style_clock(model, c)),
             "reference": (model, lambda c: reference_clock(model, c))}
    repo_info = None
    if a.official_repo:
        from smpler_deploy.bench.official_repo import build_official_model, official_output

        om, repo_info = build_official_model(a.official_repo, "smpler", model.state_dict())
        impls["official-repo"] = (lambda x: official_output(om(x)), lambda c: _official_repo_clock(om, c))
    results = []
    for b in sorted({int(t) for t in a.batch.split(",")}):
        x = torch.from_numpy(calibration_batch(b))
        results.append({"batch": b, "stages_ms": measure(impls, x, a.iters)})
    names = list(impls)
    lines = ["# Official-style baseline vs reference, per stage", "",
             f"PyTorch {torch.__version__}, {a.threads} threads, {cpu_model()} ({platform.machine()}); median of "
             f"{a.iters} interleaved rounds (one forward of each implementation per round), stages clocked in place. "
             f"Weights: {a.checkpoint or 'the default model (untrained)'}"
             + (f"; official repository: `{a.official_repo}`" if a.official_repo else "") + ".", "",
             "`prep` = a block's feature projection, sampling and query injection (the block minus its units); "
             "`smpl` = every SMPL evaluation of the forward (official: the full mesh 4x; reference: joints only 3x "
             "and the mesh once); `rest` = the forward minus every stage.", ""]
    for r in results:
        st = r["stages_ms"]
        lines += [f"## batch {r['batch']}", "", "| stage | " + " | ".join(f"{n} (ms)" for n in names)
                  + " | official-style ÷ reference |" + (" official-style ÷ official-repo |" if a.official_repo else ""),
                  "|---|" + "---:|" * (len(names) + 1 + bool(a.official_repo))]
        for k in st[names[0]]:
            ratio = st["official-style"][k] / st["reference"][k] if st["reference"][k] > 0 else float("nan")
            cells = " | ".join(f"{st[n][k]:.1f}" for n in names)
            extra = ""
            if a.official_repo:
                o = st["official-repo"][k]
                extra = f" {st['official-style'][k] / o:.2f}× |" if o > 0 else " – |"
            lines.append(f"| {k} | {cells} | {ratio:.2f}× |{extra}")
        lines.append("")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "report.json", json.dumps(
        {"results": results, "threads": a.threads, "iters": a.iters, "torch": torch.__version__, "cpu": cpu_model(),
         "checkpoint": a.checkpoint, "official_repo": repo_info}, indent=2) + "\n")
    print("\n".join(lines))


@contextlib.contextmanager
def _official_repo_clock(om, clock: StageClock):
    handles = _module_stages(om, clock)
    try:
        yield
    finally:
        for x in handles:
            x.remove()


if __name__ == "__main__":
    main()
