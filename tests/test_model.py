"""Reference model: official key layout, parameter counts, parity with the official forward, joints-only
refinement, pre-processing, and the bad inputs of the foundation issue."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from official_ops import official_forward
from smpler_deploy import SmplerError, load_model
from smpler_deploy.model.checkpoint import calibration_batch
from smpler_deploy.model.smpler import SMPLer
from smpler_deploy.preprocess import box_transform, crop, crop_person, load_image, norm_to_crop_px

DATA = Path(__file__).resolve().parent / "data"  # the official key layouts: facts, kept in the repo
TSV = {"smpler": "smpler_state_dict_w32.tsv", "smpler-l": "smpler_state_dict_w48.tsv"}
PARAMS = {"smpler": 37_355_950, "smpler-l": 73_615_150}


@functools.cache
def official_layout(variant):
    """A state dict in the official key layout, all zeros. Each tensor is a view of one zero storage per dtype, which
    torch.save writes once: a checkpoint of every key, shape and dtype is ~17 MB, not 150 / 300 MB (the layout, not
    the bytes, is what these tests load). Shared across tests: copy before changing it."""
    path = DATA / TSV[variant]
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    dtypes = {"torch.float32": torch.float32, "torch.int64": torch.int64}
    shapes = [(k, ast.literal_eval(shape), dtypes[dt]) for k, shape, dt in rows]
    numel = {k: int(torch.Size(shape).numel()) for k, shape, _ in shapes}
    storage = {dt: torch.zeros(max(numel[k] for k, _, d in shapes if d == dt), dtype=dt) for dt in dtypes.values()}
    return {k: storage[dt][: numel[k]].view(shape) for k, shape, dt in shapes}


@pytest.mark.parametrize("variant", ["smpler", "smpler-l"])
def test_state_dict_equals_official_layout_and_loads_strict(variant, tmp_path):
    sd = official_layout(variant)
    model = SMPLer(variant)
    own = model.state_dict()
    assert set(own) == set(sd) and len(sd) == 2538
    assert all(tuple(own[k].shape) == tuple(sd[k].shape) and own[k].dtype == sd[k].dtype for k in sd)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PARAMS[variant]
    # The three layouts a released checkpoint may have: raw, {"model": sd}, DDP "module." prefix.
    for i, obj in enumerate((sd, {"model": sd, "epoch": torch.tensor(3)}, {f"module.{k}": v for k, v in sd.items()})):
        path = tmp_path / f"ckpt{i}.pt"
        torch.save(obj, path)
        m = load_model(variant, checkpoint=path)
        assert not m.training and m.info["untrained"] is False and m.info["checkpoint_sha256"]


def test_outputs_match_official_forward(default_model):
    x = torch.from_numpy(calibration_batch(19)[16:19])
    with torch.no_grad():
        ours = default_model(x)
        ref = official_forward(default_model, x)
    assert (ours.vertices - ref["vertices"]).abs().max() < 1e-5  # metres: float32 rounding
    for k in ("joints", "smpl_joints", "smpl_joints2d", "rotmat", "betas", "cam"):
        assert (getattr(ours, k) - ref[k]).abs().max() < 1e-5, k
    assert tuple(ours.vertices.shape) == (3, 6890, 3) and tuple(ours.joints.shape) == (3, 14, 3)
    assert tuple(ours.rotmat.shape) == (3, 24, 3, 3) and tuple(ours.smpl_joints2d.shape) == (3, 24, 2)


def test_joints_only_refinement_equals_full_mesh_path(default_model):
    x = torch.from_numpy(calibration_batch(18)[16:18])
    with torch.no_grad():
        fast = default_model(x)
        default_model.official_style = True
        try:
            full = default_model(x)
        finally:
            default_model.official_style = False
    for a, b in zip(fast, full):
        assert (a - b).abs().max() < 1e-5


def test_default_model_is_labelled_and_deterministic(default_model):
    info = default_model.info
    assert info["untrained"] and info["standin_body"] and "stand-in" in info["body_model"]
    assert not any(m.training for m in default_model.modules())
    other = load_model("smpler")
    x = torch.from_numpy(calibration_batch(1))
    with torch.no_grad():
        assert torch.equal(default_model(x).vertices, other(x).vertices)
    # BatchNorm statistics were re-estimated on real photos (not the init's 0/1).
    bn = default_model.backbone.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_batch_axis_is_free(default_model):
    x = torch.from_numpy(calibration_batch(3))
    with torch.no_grad():
        b3 = default_model(x).vertices
        b1 = default_model(x[1:2]).vertices
    assert (b3[1] - b1[0]).abs().max() < 1e-5


@pytest.mark.parametrize("shape", [(1, 3, 256, 256), (1, 1, 224, 224), (3, 224, 224)])
def test_model_rejects_wrong_input(default_model, shape):
    with pytest.raises(SmplerError, match=r"images: expected a float tensor \[B,3,224,224\]"):
        default_model(torch.zeros(shape))


def test_checkpoint_of_other_variant_is_refused(tmp_path):
    torch.save(official_layout("smpler-l"), tmp_path / "l.pt")  # = SMPLer("smpler-l")'s layout (test above)
    with pytest.raises(SmplerError, match="weights are for `variant` smpler-l, not smpler"):
        load_model("smpler", checkpoint=tmp_path / "l.pt")


def test_checkpoint_missing_keys_are_listed(tmp_path):
    sd = dict(official_layout("smpler"))  # = SMPLer("smpler")'s layout (test above)
    for k in [k for k in sd if k.startswith("transformer.2.")]:
        del sd[k]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(SmplerError, match=r"partial.pt: 226 missing keys: transformer\.2\."):
        load_model("smpler", checkpoint=tmp_path / "partial.pt")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch EVIL_MARKER",))


def test_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(SmplerError, match="evil.pt: not a loadable weights-only checkpoint"):
        load_model("smpler", checkpoint=path)
    assert not (tmp_path / "EVIL_MARKER").exists()
    with pytest.raises(SmplerError, match="file not found"):
        load_model("smpler", checkpoint=tmp_path / "missing.pt")


def test_unknown_variant():
    with pytest.raises(SmplerError, match="^variant smpler-xl: expected one of smpler, smpler-l"):
        load_model("smpler-xl")


# --- pre-processing -------------------------------------------------------------------------------------------

def test_crop_round_trip_and_normalization():
    img = np.zeros((300, 500, 3), np.uint8)
    img[100:110, 200:210] = 255  # a bright square whose centre must land where the transform says
    t = box_transform(img.shape[:2], (150, 50, 120, 200))
    pts = np.array([[204.5, 104.5], [0.0, 0.0], [499.0, 299.0]])
    assert np.allclose(t.crop_to_image(t.image_to_crop(pts)), pts)
    c = crop(img, t).astype(float).sum(-1)
    ys, xs = np.nonzero(c > 0.5 * c.max())
    centre_img = t.crop_to_image([[xs.mean(), ys.mean()]])[0]
    assert np.allclose(centre_img, [204.5, 104.5], atol=0.6)
    x, t2 = crop_person(img, (150, 50, 120, 200))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # Black padding and black pixels normalize to -mean/std.
    assert np.allclose(x[:, 0, 0], -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225]), atol=1e-5)
    assert np.allclose(norm_to_crop_px([[-1, -1], [1, 1]]), [[0, 0], [224, 224]])


def test_bad_images_and_boxes(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(SmplerError, match="broken.jpg: cannot read image"):
        load_image(bad)
    with pytest.raises(SmplerError, match="image not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(SmplerError, match="box lies outside the 640x480 image"):
        crop_person(np.zeros((480, 640, 3), np.uint8), (700, 10, 50, 50))
    with pytest.raises(SmplerError, match="width and height must be positive"):
        crop_person(np.zeros((480, 640, 3), np.uint8), (10, 10, 0, 50))
    with pytest.raises(SmplerError, match=r"expected an RGB array \[H,W,3\]"):
        load_image(np.zeros((4, 4, 2)))


def test_h36m_regressor_option_applies_without_smpl_model(tmp_path):
    """--h36m-regressor is honoured for the default model and checkpoints too (it used to need --smpl-model)."""
    reg = np.zeros((17, 6890), np.float32)
    reg[np.arange(17), np.arange(17) * 100] = 1.0  # each joint = one vertex
    np.save(tmp_path / "reg.npy", reg)
    m = load_model("smpler", h36m_regressor=tmp_path / "reg.npy")
    assert np.array_equal(m.smpl_handler.J_regressor_h36m_correct.numpy(), reg)
    with torch.no_grad():
        out = m(torch.from_numpy(calibration_batch(1)))
    # joints[0] is H36M joint 3 (official J17->J14 order) = vertex 300
    assert torch.allclose(out.joints[0, 0], out.vertices[0, 300])
