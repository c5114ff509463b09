"""The official SMPLer repository's own forward as one more baseline cell (`smpler-bench --official-repo PATH`).

Imported from the user's checkout (its `models/` package), built as its demo.py builds it: `SMPLer(args, trans_cfg)`
with data_mode h36m, model_type smpler, hrnet_type w32 | w48, num_transformers 3, and a `TranformerConfig` whose
raw_feat_dim comes from its `config.hrnet_dict`. Its weights are our reference model's state dict (the user's
`checkpoint`, or our default model; the parameter names are the official ones), loaded with strict=True. It runs
on the same inputs, threads and device as every other cell, under the same `torch.inference_mode`.

The official code reads its meta data and HRNet config by paths relative to the working directory (its config.py:
meta_data/..., pretrained/hrnet/...). Files the checkout has are used. Missing ones are staged in a temporary
directory while the model is built: the SMPL model (the user's `smpl_model` .pkl, else our generated stand-in in
SMPL's .pkl layout), zero arrays of the right shapes for the regressors and mean parameters and an empty HRNet init
file (the strict load overwrites every one of those buffers and weights), and the HRNet yaml written from our
architecture table (`hrnet.STAGES`).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from ..errors import OptionError, SmplerError, one_line, opt
from ..outputs import SMPLOutput
from ..precision import FP32
from ..runtime.base import Session, SessionInfo

ENTRY = "models/smpler.py"  # the module whose import closure the official forward needs
HRNET_TYPE = {"smpler": "w32", "smpler-l": "w48"}
REQUIRED_FILES = (ENTRY, "models/transformer_basics.py", "config.py")


def check_repo(path) -> Path:
    repo = Path(path)
    if not repo.is_dir():
        raise OptionError("official_repo", repo, "not a directory (expected a checkout of github.com/xuxy09/SMPLer)")
    lacking = [f for f in REQUIRED_FILES if not (repo / f).is_file()]
    if lacking:
        raise OptionError("official_repo", repo, f"not the official SMPLer repository (no {', '.join(lacking)})")
    return repo.resolve()


def _local(repo: Path, top: str) -> bool:
    return (repo / top).is_dir() or (repo / f"{top}.py").is_file()


def _module_file(repo: Path, dotted: str) -> Path | None:
    base = repo.joinpath(*dotted.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def import_closure(repo: Path, entry: str = ENTRY) -> tuple[set[str], set[str]]:
    """(local top-level names, third-party top-level names) that `entry` imports, following the repo's own
    modules. Read from the source (ast), so every missing dependency is found before anything is imported."""
    seen: set[Path] = set()
    local, external = set(), set()
    todo = [repo / entry]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        except (OSError, SyntaxError, UnicodeDecodeError) as e:
            raise OptionError("official_repo", repo, f"cannot read {f.relative_to(repo)} ({one_line(e)})") from None
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
                names += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "__future__":
                continue
            if _local(repo, top):
                local.add(top)
                mf = _module_file(repo, name)
                if mf is not None:
                    todo.append(mf)
            else:
                external.add(top)
    return local, external


def missing_dependencies(repo: Path, smpl_pkl: Path | None = None) -> list[str]:
    _, external = import_closure(repo)
    missing = {m for m in external if importlib.util.find_spec(m) is None}
    # smplx unpickles the SMPL file itself: the distributed pickles hold chumpy objects.
    if smpl_pkl is not None and b"chumpy" in smpl_pkl.read_bytes() and importlib.util.find_spec("chumpy") is None:
        missing.add("chumpy")
    return sorted(missing)


@contextlib.contextmanager
def _repo_modules(repo: Path, names: set[str]):
    """Import from `repo` under its own top-level names (config, models, utils, ...) without disturbing any
    same-named modules already loaded; the official modules stay reachable through the objects built from them."""
    def owned():
        return {k for k in sys.modules if k.split(".")[0] in names}

    saved = {k: sys.modules.pop(k) for k in owned()}
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        for k in owned():
            sys.modules.pop(k)
        sys.modules.update(saved)


@contextlib.contextmanager
def _cwd(path: Path):
    prev = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(prev)


def _hrnet_yaml(width: int) -> str:
    """HRNet's yaml (HRNet-Human-Pose-Estimation layout) for our architecture table: only what get_pose_net reads."""
    from ..model.hrnet import STAGES

    lines = ["MODEL:", "  NAME: pose_hrnet", "  INIT_WEIGHTS: false", "  PRETRAINED: ''", "  EXTRA:",
             "    PRETRAINED_LAYERS: ['*']", "    FINAL_CONV_KERNEL: 1"]
    for s, (modules, branches, blocks) in enumerate(STAGES, start=2):
        lines += [f"    STAGE{s}:", f"      NUM_MODULES: {modules}", f"      NUM_BRANCHES: {branches}",
                  "      BLOCK: BASIC", f"      NUM_BLOCKS: {[blocks] * branches}",
                  f"      NUM_CHANNELS: {[width * 2**b for b in range(branches)]}", "      FUSE_METHOD: SUM"]
    return "\n".join(lines) + "\n"


def _stage_files(config, repo: Path, stage: Path, variant: str, smpl_pkl: Path | None) -> dict:
    """Make every path the official code reads (relative to the working directory) exist under `stage`; return
    what each came from."""
    import torch

    from ..body.data import NUM_VERTS
    from ..model.smpler import VARIANTS

    hrnet = config.hrnet_dict[HRNET_TYPE[variant]]
    width = VARIANTS[variant]
    made = {}  # report data (report.json's staged_files), never a message: each source as the command was given it

    def put(rel: str, write, label: str):
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = repo / rel
        if src.is_file():
            dst.symlink_to(src)
            made[rel] = f"--official-repo {rel}"
        else:
            write(dst)
            made[rel] = label

    def pkl(dst):
        if smpl_pkl is not None:
            dst.symlink_to(smpl_pkl.resolve())
        else:
            from ..body.standin import write_standin_smpl_pkl

            write_standin_smpl_pkl(dst)

    zeros = "zeros (the checkpoint's buffer replaces it)"
    if smpl_pkl is not None:  # the user's body model wins over the checkout's copy
        dst = stage / config.smpl_neutral
        dst.parent.mkdir(parents=True, exist_ok=True)
        pkl(dst)
        made[config.smpl_neutral] = f"--smpl-model {smpl_pkl}"
    else:
        put(config.smpl_neutral, pkl, "generated stand-in body model (SMPL .pkl layout)")
    put(config.smpl_mean_params_path,
        lambda d: np.savez(d, pose=np.zeros(24 * 6, np.float32), shape=np.zeros(10, np.float32)), zeros)
    for rel in (config.JOINT_REGRESSOR_H36M_correct, config.JOINT_REGRESSOR_3DPW):
        put(rel, lambda d: np.save(d, np.zeros((17, NUM_VERTS), np.float32)), zeros)
    put(hrnet[0], lambda d: d.write_text(_hrnet_yaml(width)), "written from smpler_deploy's HRNet table")
    put(hrnet[1], lambda d: torch.save({}, d), "empty (the checkpoint holds the backbone)")
    return made


def smpl_pickle(smpl_model) -> Path | None:
    """The user's `smpl_model` when smplx can read it (a .pkl), else None (the stand-in or the checkout's file)."""
    return Path(smpl_model) if smpl_model and str(smpl_model).endswith(".pkl") else None


def preflight(path, smpl_model=None) -> Path:
    """Everything checkable before any model is built: the checkout's layout and the official code's third-party
    dependencies (all missing ones named in one SmplerError)."""
    repo = check_repo(path)
    missing = missing_dependencies(repo, smpl_pickle(smpl_model))
    if missing:
        raise OptionError("official_repo", repo, f"the official code needs {', '.join(missing)}, not installed "
                          f"here (pip install {' '.join(missing)})")
    return repo


def build_official_model(repo, variant: str, state_dict: dict, smpl_pkl: Path | None = None):
    """The official SMPLer nn.Module from `repo`, strictly loaded with `state_dict`, in eval mode.
    -> (model, info). Missing third-party modules raise one SmplerError naming all of them."""
    if variant not in HRNET_TYPE:
        raise OptionError("official_repo", None,
                          f"variant {variant} has no official HRNet config (expected smpler or smpler-l)")
    repo = preflight(repo, smpl_pkl)
    local, _ = import_closure(repo)
    with _repo_modules(repo, local):
        try:
            smpler_mod = importlib.import_module("models.smpler")
            basics = importlib.import_module("models.transformer_basics")
            config = importlib.import_module("config")
        except Exception as e:  # noqa: BLE001 - their code: any failure is one line naming it
            raise OptionError("official_repo", repo, f"importing {ENTRY} failed ({one_line(e)})") from None
    args = types.SimpleNamespace(data_mode="h36m", model_type="smpler", hrnet_type=HRNET_TYPE[variant],
                                 num_transformers=3)
    with tempfile.TemporaryDirectory(prefix="smpler-official-") as stage:
        try:
            staged = _stage_files(config, repo, Path(stage), variant, smpl_pkl)
            trans_cfg = basics.TranformerConfig()
            trans_cfg.raw_feat_dim = config.hrnet_dict[args.hrnet_type][2]
            with _cwd(Path(stage)):
                model = smpler_mod.SMPLer(args, trans_cfg)
        except SmplerError:
            raise
        except Exception as e:  # noqa: BLE001
            raise OptionError("official_repo", repo, f"building its SMPLer failed ({one_line(e)})") from None
    where = f"{opt('official_repo')} {repo}: our state dict does not load strictly into its SMPLer"
    try:  # strict: every key both ways (checked below, to name them), every shape (raises here)
        res = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:3] if line.strip())
        raise SmplerError(f"{where} ({detail[:300]})") from None
    bad = [f"{what} {_first(keys)}" for what, keys in (("missing", res.missing_keys),
                                                        ("unexpected", res.unexpected_keys)) if keys]
    if bad:
        raise SmplerError(f"{where} ({'; '.join(bad)})")
    info = {"repo": str(repo), "commit": _commit(repo), "entry": ENTRY,
            "constructor": "SMPLer(args, trans_cfg) as demo.py", "hrnet_type": args.hrnet_type, "staged_files": staged}
    return model.eval(), info


def _commit(repo) -> str | None:
    """The checkout's commit, so a report says which official code it timed (None: not a git checkout)."""
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def _first(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def official_output(pred) -> SMPLOutput:
    """The official forward's last stage dict -> SMPLOutput (its keys: vertices, joints (H36M-14), smpl_joints,
    smpl_joints2d, theta (rotation matrices), beta, cam)."""
    d = pred[-1]
    try:
        return SMPLOutput(d["vertices"], d["joints"], d["smpl_joints"], d["smpl_joints2d"], d["theta"], d["beta"],
                          d["cam"])
    except (KeyError, TypeError) as e:
        raise OptionError("official_repo", None,
                          f"its forward's last output has no {e} (expected the official stage dict)") from None


class OfficialRepoSession(Session):
    """Session over the official module (fp32, eager), on `device`. `repo_info` describes the checkout and the
    weights for the report."""

    backend = "official-repo"
    where = "official-repo session"
    precision = FP32

    def __init__(self, repo, *, variant="smpler", checkpoint=None, smpl_model=None, threads=None, device="cpu",
                 model=None):
        import torch

        from ..model.checkpoint import load_model

        ours = model if model is not None else load_model(variant, checkpoint, smpl_model)
        self.model, self.repo_info = build_official_model(repo, variant, ours.state_dict(), smpl_pickle(smpl_model))
        self.repo_info |= {"weights": ours.info.get("checkpoint") or "our default model's state dict",
                           "untrained": ours.info.get("untrained"), "device": device}
        self.info = SessionInfo(variant=variant, untrained=ours.info.get("untrained"),
                                checkpoint=ours.info.get("checkpoint"), device=device)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.model.to(self.device)

    def _run(self, images) -> SMPLOutput:
        import torch

        x = torch.from_numpy(images).to(self.device)
        with torch.inference_mode():
            return official_output(self.model(x)).numpy()  # .numpy() copies to the host (synchronizes)

    def _release(self) -> None:
        self.model = None
