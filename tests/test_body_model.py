"""Stand-in body model validity and the SMPL body-model loaders (pkl / npz / checkpoint), incl. hostile inputs."""

import os
import pickle
import sys
import time
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from smpler_deploy.body.data import SHAPES, SMPL_PARENTS, BodyModelData
from smpler_deploy.body.loaders import (load_body_model, load_h36m_regressor, posedirs_to_pkl,
                                        save_body_model_npz)
from smpler_deploy.body.standin import REST_JOINTS, make_standin_body_model, write_standin_smpl_pkl
from smpler_deploy.errors import SmplerError

# CPU seconds of the generating thread (not wall clock, which a loaded machine stretches; not the process's, which
# idle-spinning BLAS threads inflate on many-core machines) the stand-in may take: 1.3-1.6 s here, on 2 cores at load 6-11.
STANDIN_CPU_S = 5.0
FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces", "parents")
_COST = {}  # what the module's stand-in fixture measured


@pytest.fixture(scope="module")
def standin():
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SMPLER_DEPLOY_CACHE", "off")  # generated here, not read from the on-disk cache
        t0 = time.thread_time()
        model = make_standin_body_model(seed=0)
        _COST["cpu_s"] = time.thread_time() - t0
    return model


@pytest.fixture(scope="module")
def standin_pkl(tmp_path_factory):
    p = tmp_path_factory.mktemp("pkl") / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    write_standin_smpl_pkl(p, seed=0)
    return p


def _err(fn, *args) -> str:
    with pytest.raises(SmplerError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg  # user errors are one line
    return msg


def _assert_same(a: BodyModelData, b: BodyModelData, atol=1e-6):
    for k in FIELDS:
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=atol, err_msg=k)


# ---------------------------------------------------------------------------------------------------------------
# Stand-in
# ---------------------------------------------------------------------------------------------------------------

def test_standin_shapes_labels_and_work(standin):
    standin.validate()
    for name, shape in SHAPES.items():
        assert getattr(standin, name).shape == shape
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "J_regressor_h36m"):
        assert getattr(standin, name).dtype == np.float32, name
    assert standin.faces.dtype == np.int64 and standin.parents.dtype == np.int64
    assert standin.J_regressor_h36m.shape == (17, 6890)
    assert standin.standin and standin.source == "stand-in (generated, seed 0)"
    assert "stand-in" in standin.label
    # Every command without a --smpl-model generates it, so it must stay cheap: a CPU-time budget, ~3x today's
    # cost; and each joint's regressor row spreads over a local neighbourhood (at most 384 vertices), never over
    # the widest search (768), which would also mean the joint is not surrounded by the surface.
    assert _COST["cpu_s"] < STANDIN_CPU_S, f"generating the stand-in took {_COST['cpu_s']:.1f} s of CPU time"
    for R in (standin.J_regressor, standin.J_regressor_h36m):
        assert (R > 0).sum(1).max() <= 384


def test_standin_deterministic(monkeypatch):
    monkeypatch.setenv("SMPLER_DEPLOY_CACHE", "off")  # two generations, not one and its cached copy
    a, b = make_standin_body_model(3), make_standin_body_model(3)
    for k in FIELDS + ("J_regressor_h36m",):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.source.endswith("seed 3)")


def test_standin_tree(standin):
    p = standin.parents
    assert p[0] == -1 and all(0 <= p[i] < i for i in range(1, 24))
    # SMPL's kinematic tree (kintree_table of the official model files), written out: not the module's constant
    assert tuple(p.tolist()) == SMPL_PARENTS == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17,
                                                 18, 19, 20, 21)


def test_standin_closed_oriented_mesh(standin):
    V, F = standin.v_template.astype(np.float64), standin.faces
    assert F.min() >= 0 and F.max() < 6890
    assert len(np.unique(F)) == 6890  # every vertex is used
    directed = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    assert np.all(counts == 2)  # closed 2-manifold: each edge shared by exactly two faces
    assert len(np.unique(directed, axis=0)) == len(directed)  # consistent orientation
    assert 6890 - len(undirected) + len(F) == 2  # Euler characteristic of a sphere (genus 0)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    assert np.linalg.norm(n, axis=1).min() / 2 > 1e-7  # no degenerate faces
    volume = np.einsum("ij,ij->i", V[F[:, 0]], np.cross(V[F[:, 1]], V[F[:, 2]])).sum() / 6
    assert 0.04 < volume < 0.12  # outward faces; a ~70 kg human is ~0.07 m^3
    # locally outward too: face normals point away from the body's centre line for the torso band
    c = V[F].mean(1)
    torso = (np.abs(c[:, 0]) < 0.1) & (c[:, 1] > -0.2) & (c[:, 1] < 0.15)
    radial = c[torso] * [1, 0, 1] - [0, 0, 0.01]
    assert np.mean(np.einsum("ij,ij->i", n[torso], radial) > 0) > 0.99


def test_standin_body_proportions(standin):
    V = standin.v_template
    height = V[:, 1].max() - V[:, 1].min()
    assert 1.5 < height < 1.9
    assert 1.5 < V[:, 0].max() - V[:, 0].min() < 2.0  # T-pose arm span
    assert V[:, 1].argmax() != V[:, 0].argmax()
    J = standin.J_regressor @ V
    np.testing.assert_allclose(J, REST_JOINTS, atol=1e-3)  # regressor reproduces the designed joints
    assert np.linalg.norm(J[0]) < 0.3  # pelvis near the origin
    assert J[15, 1] > J[12, 1] > J[9, 1] > J[6, 1] > J[3, 1] > J[0, 1] > J[4, 1] > J[7, 1]  # head .. ankle
    assert J[16, 0] > 0 > J[17, 0]  # +x is the subject's left
    h = standin.J_regressor_h36m @ V
    assert h[10, 1] > h[9, 1] > h[8, 1] > h[0, 1] > h[2, 1] > h[3, 1]  # head top > nose > thorax > pelvis > knee


def test_standin_weights_and_regressors(standin):
    W = standin.lbs_weights
    assert W.min() >= 0 and np.allclose(W.sum(1), 1, atol=1e-5)
    assert np.median(W.max(1)) > 0.6 and (W > 0).sum(1).max() <= 10  # concentrated on the nearest bones
    e = np.concatenate([standin.faces[:, [0, 1]], standin.faces[:, [1, 2]]])
    assert np.abs(W[e[:, 0]] - W[e[:, 1]]).max() < 0.35  # smooth transitions across joints
    assert (np.bincount(W.argmax(1), minlength=24) > 0).all()  # every joint drives some skin
    left_hand = standin.v_template[:, 0] > 0.8
    assert (W[left_hand].argmax(1) == 22).mean() > 0.8
    for R in (standin.J_regressor, standin.J_regressor_h36m):
        assert R.min() >= 0 and np.allclose(R.sum(1), 1, atol=1e-5)
        assert ((R > 0).sum(1) >= 4).all()


def test_standin_blend_shapes(standin):
    per_beta = np.abs(standin.shapedirs).max(axis=(0, 1))
    assert ((per_beta > 0.005) & (per_beta < 0.1)).all()  # a few cm per unit beta
    pd = np.abs(standin.posedirs)
    assert 0 < pd.max() < 0.01  # mm scale
    # smooth: neighbouring vertices move alike (relative to each direction's size)
    e = np.concatenate([standin.faces[:, [0, 1]], standin.faces[:, [1, 2]]])
    jump = np.abs(standin.shapedirs[e[:, 0]] - standin.shapedirs[e[:, 1]]).max(1) / per_beta
    assert (np.median(jump, 0) < 0.15).all() and (np.percentile(jump, 99, 0) < 0.5).all()


# ---------------------------------------------------------------------------------------------------------------
# Loaders: round trips
# ---------------------------------------------------------------------------------------------------------------

def test_npz_round_trip(standin, tmp_path):
    p = tmp_path / "standin.npz"
    save_body_model_npz(standin, p)
    assert sorted(os.listdir(tmp_path)) == ["standin.npz"]  # atomic write leaves no temp file
    d = load_body_model(p)
    _assert_same(standin, d, atol=0)
    np.testing.assert_array_equal(d.J_regressor_h36m, standin.J_regressor_h36m)
    assert d.standin and d.source == standin.source


def test_npz_with_smpl_pkl_key_names(standin, tmp_path):
    p = tmp_path / "smpl_keys.npz"
    kt = np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.uint32)
    np.savez(p, v_template=standin.v_template, shapedirs=np.concatenate([standin.shapedirs] * 3, 2),
             posedirs=posedirs_to_pkl(standin.posedirs), J_regressor=standin.J_regressor,
             weights=standin.lbs_weights, f=standin.faces.astype(np.uint32), kintree_table=kt)
    d = load_body_model(p)
    _assert_same(standin, d)
    assert not d.standin and d.J_regressor_h36m is None


def test_smpl_pkl_with_sparse_regressor(standin, standin_pkl):
    raw = pickle.loads(standin_pkl.read_bytes())
    assert sp.issparse(raw["J_regressor"]) and raw["J_regressor"].format == "csc"
    assert raw["posedirs"].shape == (6890, 3, 207) and raw["f"].shape == (13776, 3)
    d = load_body_model(standin_pkl)
    _assert_same(standin, d)
    assert d.parents[0] == -1 and d.faces.dtype == np.int64
    assert d.standin and d.J_regressor_h36m is None  # a SMPL pkl has no H36M regressor: --h36m-regressor


def _fake_chumpy(monkeypatch):
    """Register a throwaway `chumpy.ch.Ch` so instances pickle under chumpy's real module path."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:  # pickles via __reduce_ex__ like chumpy's Ch: class + __dict__ state
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}

    class Select(Ch):  # a derived expression: no 'x'
        def __init__(self, a):
            self.a = a
            self._dirty_vars = {"a"}

    for c in (Ch, Select):
        c.__module__, c.__qualname__ = "chumpy.ch", c.__name__
    mod.Ch, mod.Select, pkg.ch = Ch, Select, mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch, Select


@pytest.mark.parametrize("protocol", [0, 2])
def test_smpl_pkl_with_chumpy_arrays(standin, standin_pkl, tmp_path, monkeypatch, protocol):
    Ch, _ = _fake_chumpy(monkeypatch)
    raw = pickle.loads(standin_pkl.read_bytes())
    for k in ("v_template", "shapedirs", "weights", "posedirs"):
        raw[k] = Ch(raw[k])
    p = tmp_path / "chumpy.pkl"
    p.write_bytes(pickle.dumps(raw, protocol=protocol))
    monkeypatch.delitem(sys.modules, "chumpy.ch")  # loading must not need chumpy
    monkeypatch.delitem(sys.modules, "chumpy")
    _assert_same(standin, load_body_model(p))


def test_chumpy_expression_is_refused(standin_pkl, tmp_path, monkeypatch):
    Ch, Select = _fake_chumpy(monkeypatch)
    raw = pickle.loads(standin_pkl.read_bytes())
    raw["v_template"] = Select(Ch(raw["v_template"]))
    p = tmp_path / "expr.pkl"
    p.write_bytes(pickle.dumps(raw, protocol=2))
    msg = _err(load_body_model, p)
    assert str(p) in msg and "v_template" in msg and "chumpy" in msg


@pytest.mark.parametrize("wrap", ["raw", "model"])
def test_checkpoint_smpl_buffers(standin, tmp_path, wrap):
    sd = {"backbone.conv1.weight": torch.zeros(2, 3, 3, 3)}
    names = {"v_template": "v_template", "shapedirs": "shapedirs", "posedirs": "posedirs",
             "J_regressor": "J_regressor", "lbs_weights": "lbs_weights", "faces": "faces_tensor", "parents": "parents"}
    for field, name in names.items():
        sd[f"module.smpl_handler.smpl.{name}"] = torch.from_numpy(getattr(standin, field).copy())
    sd["module.smpl_handler.J_regressor_h36m_correct"] = torch.from_numpy(standin.J_regressor_h36m.copy())
    p = tmp_path / "SMPLer_h36m.pt"
    torch.save(sd if wrap == "raw" else {"model": sd, "optimizer": {}, "epoch": 3}, p)
    d = load_body_model(p)
    _assert_same(standin, d, atol=0)
    np.testing.assert_array_equal(d.J_regressor_h36m, standin.J_regressor_h36m)


def test_h36m_regressor_file(standin, tmp_path):
    p = tmp_path / "J_regressor_h36m_correct.npy"
    np.save(p, standin.J_regressor_h36m.astype(np.float64))
    r = load_h36m_regressor(p)
    assert r.dtype == np.float32 and r.shape == (17, 6890)
    np.savez(tmp_path / "r.npz", J_regressor_h36m=standin.J_regressor_h36m)
    assert load_h36m_regressor(tmp_path / "r.npz").shape == (17, 6890)
    np.save(tmp_path / "bad.npy", np.zeros((17, 100)))
    assert "[17, 100]" in _err(load_h36m_regressor, tmp_path / "bad.npy")
    assert "no such file" in _err(load_h36m_regressor, tmp_path / "missing.npy")


# ---------------------------------------------------------------------------------------------------------------
# Loaders: hostile and broken inputs
# ---------------------------------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["os.system", "eval", "nested"])
def test_malicious_pickle_does_not_run(standin_pkl, tmp_path, kind):
    marker = tmp_path / "pwned"
    if kind == "eval":
        payload = _Evil(eval, f"open({str(marker)!r}, 'w').close()")
    else:
        payload = _Evil(os.system, f"touch {marker}")
    obj = payload
    if kind == "nested":  # hidden inside an otherwise valid SMPL dict
        obj = pickle.loads(standin_pkl.read_bytes())
        obj["bs_style"] = payload
    p = tmp_path / "SMPL_NEUTRAL.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    msg = _err(load_body_model, p)
    assert not marker.exists()
    assert msg.startswith(f"{p}: refusing to unpickle '")
    assert ("eval" in msg) if kind == "eval" else ("system" in msg)
    assert "expected a SMPL model pickle" in msg


def test_other_globals_refused(tmp_path):
    import collections

    p = tmp_path / "odd.pkl"
    p.write_bytes(pickle.dumps({"v_template": collections.OrderedDict()}, protocol=2))
    assert "refusing to unpickle 'collections.OrderedDict'" in _err(load_body_model, p)


def test_wrong_shapes(standin, tmp_path):
    p = tmp_path / "short.npz"
    arrays = {k: getattr(standin, k) for k in FIELDS}
    arrays["v_template"] = arrays["v_template"][:100]
    np.savez(p, **arrays)
    msg = _err(load_body_model, p)
    assert str(p) in msg and "v_template" in msg and "[6890, 3]" in msg
    arrays = {k: getattr(standin, k) for k in FIELDS}
    arrays["parents"] = np.zeros(24, np.int64)
    np.savez(p, **arrays)
    assert "parents" in _err(load_body_model, p)


def test_missing_key_npz(standin, tmp_path):
    p = tmp_path / "nofaces.npz"
    np.savez(p, **{k: getattr(standin, k) for k in FIELDS if k != "faces"})
    msg = _err(load_body_model, p)
    assert str(p) in msg and "faces" in msg


def test_checkpoint_without_smpl_buffers(tmp_path):
    p = tmp_path / "backbone_only.pth"
    torch.save({"model": {"module.backbone.conv1.weight": torch.zeros(1)}}, p)
    msg = _err(load_body_model, p)
    assert str(p) in msg and "smpl_handler.smpl.v_template" in msg and "more" in msg


def test_checkpoint_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(os.system, f"touch {marker}")}, p)
    msg = _err(load_body_model, p)
    assert str(p) in msg and not marker.exists()


def test_unreadable_files(tmp_path):
    assert "no such file" in _err(load_body_model, tmp_path / "nope.pkl")
    assert "no such file" in _err(load_body_model, tmp_path)  # a directory
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle at all")
    assert str(garbage) in _err(load_body_model, garbage)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.zeros(1000)}, protocol=2)[:200])
    assert str(truncated) in _err(load_body_model, truncated)
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2, 3]))
    assert "expected a SMPL model dict" in _err(load_body_model, not_dict)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04 broken")
    assert str(bad_npz) in _err(load_body_model, bad_npz)
    bad_pt = tmp_path / "bad.pt"
    bad_pt.write_bytes(b"\x00\x01garbage")
    assert str(bad_pt) in _err(load_body_model, bad_pt)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pkl"
        locked.write_bytes(pickle.dumps({}))
        locked.chmod(0)
        assert "cannot read" in _err(load_body_model, locked)
