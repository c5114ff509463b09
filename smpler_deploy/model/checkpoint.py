"""Model construction (`load_model`, the package's entry point): official checkpoints (loaded without executing
code) or the default untrained model.

The default model is what runs out of the box without licensed files: seeded weights, the generated stand-in
body model, and BatchNorm statistics re-estimated on public-domain sample photos bundled with scikit-image so
activations have realistic scale. Everything made with it says so (`model.info`). Building it takes tens of
seconds on a small CPU (the re-estimation runs the backbone on 16 crops), so the built state is kept in the
on-disk cache (`smpler_deploy.cache`) and a second process only reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, opt
from ..torch_weights import state_dict_in, torch_load_weights
from .smpler import VARIANTS, SMPLer

DEFAULT_SEED = 0
# Gain of the last BatchNorm in every residual branch of the default model. With unit gains the random HRNet is
# chaotic: it amplifies any perturbation ~10x per stage (fp16 rounding became 4-6% feature error and ~0.9 mm on
# vertices), which says nothing about a trained network. Small final gains (the "zero-gamma" practice) keep the
# random model's feature scale realistic without that amplification (0.6% feature error in fp16).
RESIDUAL_GAIN = 0.2
_WIDTH_TO_VARIANT = {w * 8: v for v, w in VARIANTS.items()}  # global_feat_projection input = 8C


def read_checkpoint(path) -> dict[str, torch.Tensor]:
    """Raw state dict or {"model": sd}; strips a DDP `module.` prefix. weights_only: no code runs."""
    p = Path(path)
    if not p.is_file():
        raise OptionError("checkpoint", p, "file not found")
    sd = state_dict_in(torch_load_weights(p, f"{opt('checkpoint')} {p}"), wrappers=("model",))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise OptionError("checkpoint", p, "expected a state dict of tensors (or {'model': state_dict})")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a NaN weight would otherwise travel on (e.g. to an index of -2^63 in the attention's sampling)
        k = sorted(bad)[0]
        n = int((~torch.isfinite(sd[k])).sum())
        raise OptionError("checkpoint", p, f"non-finite weights (NaN/Inf) in {k} ({n} values)"
                          + (f" and {len(bad) - 1} more parameters" if len(bad) > 1 else ""))
    return sd


def checkpoint_variant(sd: dict) -> str | None:
    w = sd.get("global_feat_projection.weight")
    return _WIDTH_TO_VARIANT.get(int(w.shape[1])) if w is not None and w.dim() == 2 else None


def _first(keys, n=4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checkpoint_into(model: SMPLer, path, fill_body: bool = False) -> None:
    sd = read_checkpoint(path)
    found = checkpoint_variant(sd)
    if found and found != model.variant:
        raise OptionError("checkpoint", path, f"weights are for {opt('variant')} {found}, not {model.variant}")
    own = model.state_dict()
    missing = set(own) - set(sd)
    if fill_body:  # a checkpoint stripped of the SMPL arrays, completed from `smpl_model`
        for k in [k for k in missing if k.startswith("smpl_handler.")]:
            sd[k] = own[k]
        missing = set(own) - set(sd)
    if missing:
        raise OptionError("checkpoint", path, f"{len(missing)} missing keys: {_first(missing)}")
    unexpected = set(sd) - set(own)
    if unexpected:
        raise OptionError("checkpoint", path, f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        k = sorted(bad)[0]
        raise OptionError("checkpoint", path, f"{len(bad)} keys with other shapes, e.g. {k} "
                          f"{list(sd[k].shape)} (expected {list(own[k].shape)})")
    model.load_state_dict(sd, strict=True)


def init_default_weights(model: SMPLer, seed: int = DEFAULT_SEED) -> None:
    """Deterministic initialisation in the spirit of the official one (transformer N(0,0.02), SPIN decoders)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                std = 0.02
                m.weight.normal_(0, std, generator=g)
                m.bias.zero_()
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) or type(m).__name__ == "LayerNormChannel":
                m.weight.fill_(1)
                m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0, 0.02, generator=g)
        from .hrnet import BasicBlock, Bottleneck

        for m in model.backbone.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                (m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight.fill_(RESIDUAL_GAIN)
        p = model.SMPL_predictor
        for lin in (p.decpose, p.decshape, p.deccam):
            nn.init.xavier_uniform_(lin.weight, gain=0.01, generator=g)
        for block in model.transformer:
            block.trans_block.feat_position_embedding.normal_(0, 0.1, generator=g)
            for unit in block.trans_block.trans_units:
                # Non-zero (the official init is zeros) so the relative-position path is exercised.
                unit.local_unit.relative_position_encoding_table[0].normal_(0, 0.5, generator=g)
            for lin in (block.theta_predictor, block.beta_predictor, block.cam_predictor):
                lin.weight.normal_(0, 1e-3, generator=g)
                lin.bias.zero_()
            block.theta_predictor.bias[[0, 3]] = 0.1  # delta rotation = identity
        # Mean pose: identity joints, body turned upright in the image frame (y down): R0 = diag(1,-1,-1).
        pose = torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(24)
        pose[:6] = torch.tensor([1.0, 0, 0, -1, 0, 0])
        p.init_pose.copy_(pose[None])
        p.init_shape.zero_()
        p.init_cam.copy_(torch.tensor([[0.9, 0.0, 0.0]]))


def calibration_batch(n: int = 16, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The first n crops of the fixed sample-photo stream (BatchNorm re-estimation, built-in int8 set)."""
    from ..preprocess import sample_crops

    return sample_crops(n, seed)[0]


@torch.no_grad()
def recalibrate_batchnorm(model: SMPLer, images: np.ndarray) -> None:
    """Re-estimate BN statistics with one full-batch pass (running stats = that batch's statistics)."""
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    model.backbone(torch.from_numpy(images))
    for m in bns:
        m.momentum = 0.1
        m.eval()


def build_default_state(variant: str, seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """The default model's state dict, made from scratch: seeded weights, stand-in body, BatchNorm re-estimated."""
    from ..body.standin import make_standin_body_model

    torch.manual_seed(seed)
    model = SMPLer(variant)
    init_default_weights(model, seed)
    model.smpl_handler.set_body_model(make_standin_body_model(seed))
    recalibrate_batchnorm(model, calibration_batch(seed=seed))
    return {k: v.clone() for k, v in model.state_dict().items()}


def default_state_key(variant: str, seed: int = DEFAULT_SEED) -> dict:
    """Everything `build_default_state` depends on (the on-disk cache entry is stale when any of it changes): the
    code (architecture, initialisation, stand-in body, crops), torch's kernels and init routines, the libraries
    that make the stand-in body and decode and warp the bundled sample photos (their files come with scikit-image)."""
    from .. import __version__, cache

    pkg = Path(__file__).resolve().parent.parent
    sources = [*(pkg / "model").glob("*.py"), *(pkg / "body").glob("*.py"),
               *(pkg / n for n in ("preprocess.py", "outputs.py", "plugins/abi.py"))]
    return {"what": "default-model", "variant": variant, "seed": int(seed), "version": __version__,
            "source": cache.source_digest(*sources), "residual_gain": RESIDUAL_GAIN,
            **cache.build_environment("torch", "numpy", "scipy", "scikit-image", "pillow", "imageio")}


def default_state_arrays(model: SMPLer, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """The default state for `model`'s variant from the on-disk cache (checked against `model`'s own names,
    shapes and dtypes), else made by `build_default_state` and stored there."""
    from .. import cache

    expected = {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in model.state_dict().items()}
    return cache.cached_arrays(
        cache.Entry(f"default-{model.variant}-seed{seed}", f"default {model.variant} model",
                    default_state_key(model.variant, seed)),
        lambda: {n: t.numpy() for n, t in build_default_state(model.variant, seed).items()},
        lambda a: cache.spec_mismatch(expected, a))


_STATES: dict[tuple[str, int], dict[str, np.ndarray]] = {}  # this process's default states (at most two)


def default_state(model: SMPLer, seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """`default_state_arrays` once per process, as tensors to copy in (they are this process's one copy)."""
    k = (model.variant, int(seed))
    if k not in _STATES:
        arrays = default_state_arrays(model, seed)
        while len(_STATES) >= 2:
            _STATES.pop(next(iter(_STATES)))
        _STATES[k] = arrays
    return {n: torch.from_numpy(a) for n, a in _STATES[k].items()}


def build_model(variant: str, checkpoint=None, smpl_model=None, h36m_regressor=None) -> SMPLer:
    if variant not in VARIANTS:
        raise OptionError("variant", variant, f"expected one of {', '.join(VARIANTS)}")
    from ..body.loaders import load_body_model, load_h36m_regressor

    model = SMPLer(variant)
    handler = model.smpl_handler
    body = load_body_model(smpl_model) if smpl_model is not None else None
    h36m = load_h36m_regressor(h36m_regressor) if h36m_regressor is not None else None
    if checkpoint is not None:
        if body is not None:
            handler.set_body_model(body)  # provides the arrays a stripped checkpoint lacks
        load_checkpoint_into(model, checkpoint, fill_body=body is not None)
        if body is not None:  # an explicit `smpl_model` wins over the checkpoint's arrays
            handler.set_body_model(body)
        else:
            handler.body_standin, handler.body_source = False, f"checkpoint {Path(checkpoint).name}"
        from ..fileio import sha256_file

        model.info.update(untrained=False, checkpoint=str(checkpoint), checkpoint_sha256=sha256_file(checkpoint))
    else:
        model.load_state_dict(default_state(model, DEFAULT_SEED), strict=True)
        if body is not None:
            if body.J_regressor_h36m is None and h36m is None:
                raise OptionError("smpl_model", smpl_model, f"has no H36M joint regressor; pass "
                                  f"{opt('h36m_regressor')} J_regressor_h36m_correct.npy (from the SMPLer meta data)")
            handler.set_body_model(body)
        else:
            handler.body_standin, handler.body_source = True, "stand-in (generated)"
    if h36m is not None:  # applies to every source: e.g. the 3DPW regressor with an H36M checkpoint
        handler.set_h36m_regressor(h36m)
    model.info["standin_body"] = handler.body_standin
    model.info["body_model"] = handler.body_source
    return model


def load_model(variant: str = "smpler", checkpoint=None, smpl_model=None, *, attention: str = "torch",
               h36m_regressor=None, official_style: bool = False) -> SMPLer:
    """Build SMPLer in eval mode.

    checkpoint: official `.pt` (raw state dict or {"model": sd}, optional `module.` prefix), or None for the
    default out-of-the-box model (seeded, untrained, BatchNorm re-estimated on sample images).
    smpl_model: SMPL `.pkl`/`.npz`, or a checkpoint carrying the SMPL buffers; None keeps the checkpoint's
    arrays, or the generated stand-in body model when there is no checkpoint.
    """
    model = build_model(variant, checkpoint, smpl_model, h36m_regressor)
    model.official_style = official_style
    return model.set_attention(attention).eval()


def default_model_info(variant: str = "smpler") -> dict:
    return {"variant": variant, "untrained": True, "standin_body": True, "checkpoint": None,
            "body_model": "stand-in (generated)"}
