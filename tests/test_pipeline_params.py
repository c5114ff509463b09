"""SMPL parameters out of smpler-run: the camera translation formula, axis-angle conversion, interop with the
smplx package (our saved parameters + the stand-in body model in SMPL's .pkl layout reproduce our vertices),
overlays in original image coordinates on a real photo, tracking and smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from smpler_deploy.camera import Camera, camera_translation, weak_camera
from smpler_deploy.pipeline.params import read_params, rotmat_to_axis_angle, write_params
from smpler_deploy.preprocess import box_transform, to_pixels

BODY_JOINTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15]  # pelvis, legs, spine, neck, head (not the arms)


def weak_project(points, cam, transform):
    """The model's own 2D mapping, written out: [N,3] metres + cam (s, tx, ty) -> normalized crop coordinates
    s·(X + t) -> image pixels."""
    s, tx, ty = (float(v) for v in np.asarray(cam, np.float64).reshape(3))
    return to_pixels(s * (np.asarray(points, np.float64)[:, :2] + [tx, ty]), transform)


def test_camera_translation_reproduces_the_overlay_projection():
    """Points at the body's depth (Z = 0) land on the same pixels through the pinhole camera as through the
    overlay's weak-perspective mapping, for any box, focal length and principal point."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = box_transform((480, 640), (rng.uniform(0, 500), rng.uniform(0, 300), rng.uniform(20, 200),
                                       rng.uniform(40, 300)))
        cam = np.array([rng.uniform(0.5, 1.5), rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)])
        f, pp = rng.uniform(300, 3000), rng.uniform([200, 150], [440, 330])
        pts = np.c_[rng.uniform(-1, 1, (50, 2)), np.zeros(50)]
        T = camera_translation(cam, t, f, pp)
        assert np.allclose(Camera(f, tuple(pp)).project(pts + T), weak_project(pts, cam, t), atol=1e-6)
        assert T[2] == pytest.approx(2 * f / (cam[0] * t.side))  # Tz = 2 f / (s b)
        assert np.allclose(weak_camera(T, t, f, pp), cam, atol=1e-9)


def test_axis_angle_round_trip():
    import torch

    from smpler_deploy.body.lbs import axis_angle_to_rotmat

    rng = np.random.default_rng(1)
    aa = rng.normal(size=(24, 3))
    aa *= (rng.uniform(0, np.pi * 0.999, 24) / np.linalg.norm(aa, axis=1))[:, None]
    aa[0] = [np.pi * 0.999, 0, 0]  # the default model's root sits near 180 degrees about x
    rot = axis_angle_to_rotmat(torch.from_numpy(aa)).numpy()
    assert np.allclose(rotmat_to_axis_angle(rot), aa, atol=1e-9)


@pytest.fixture(scope="module")
def astronaut_run(default_model):
    """The whole loop on a real photo (OpenCV detector, torch session), vertices kept."""
    from skimage import data

    from smpler_deploy.pipeline.detect import OpenCVDetector
    from smpler_deploy.pipeline.runner import RunConfig, run
    from smpler_deploy.pipeline.video import ImageSource
    from smpler_deploy.runtime import open_session

    img = data.astronaut()

    class One(ImageSource):
        def __iter__(self):
            from smpler_deploy.pipeline.video import Frame

            yield Frame(0, img, "astronaut.png")

    sess = open_session("torch", model=default_model)
    overlays = []
    people, _ = run(One([], "astronaut"), OpenCVDetector(), sess, faces=default_model.smpl_handler.faces,
                    config=RunConfig(keep_vertices=True), on_frame=lambda f, ov, pp: overlays.append(ov),
                    log=lambda *a: None)
    return img, people, overlays[0]


def test_projected_joints_fall_inside_the_person_box(astronaut_run):
    img, people, overlay = astronaut_run
    assert len(people) == 1
    p = people[0]
    x, y, w, h = p.box
    inside = lambda q, pad=0.0: ((q[:, 0] >= x - pad) & (q[:, 0] <= x + w + pad) & (q[:, 1] >= y - pad)
                                 & (q[:, 1] <= y + h + pad))
    # the untrained model's arms stay in a T-pose wider than a person box; body joints must sit inside it, and
    # every joint inside the crop square the box was grown to
    assert inside(p.joints2d[BODY_JOINTS]).all(), p.joints2d
    cx, cy, side = p.crop
    assert (np.abs(p.joints2d - [cx, cy]) <= side / 2).all()
    # the saved camera translation places the mesh on the same pixels, up to perspective (depth ~ +-0.2 m at ~3 m)
    persp = Camera(p.focal_length, tuple(p.principal_point)).project(p.vertices + p.transl)
    from smpler_deploy.preprocess import CropTransform

    weak = weak_project(p.vertices, p.cam, CropTransform(cx, cy, side))
    assert np.median(np.linalg.norm(persp - weak, axis=1)) < 0.05 * h
    # the overlay is drawn in original image coordinates: pixels change inside the box, not far outside the crop
    diff = np.abs(overlay.astype(int) - img).sum(-1) > 0
    assert diff[int(y):int(y + h), int(x):int(x + w)].mean() > 0.2
    # every changed pixel (but the label banner and the box outline) lies on the mesh as the overlay's pinhole
    # camera projects it, or on the joints
    uv = np.r_[persp, p.joints2d]
    lo, hi = uv.min(0) - 6, uv.max(0) + 6
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    outline = ((np.abs(xx - x) < 4) | (np.abs(xx - (x + w)) < 4) | (np.abs(yy - y) < 16) | (np.abs(yy - (y + h)) < 4))
    on_mesh = (xx >= lo[0]) & (xx <= hi[0]) & (yy >= lo[1]) & (yy <= hi[1])
    stray = diff & ~outline & ~on_mesh
    stray[:25] = False
    assert diff[~outline & ~on_mesh].size > 1000 and not stray.any()


def test_smplx_reproduces_our_vertices_from_saved_parameters(tmp_path, astronaut_run, default_model):
    """Interop: the saved axis-angle parameters and betas, fed with the stand-in body model written in SMPL's
    .pkl layout to `smplx.SMPL`, give our vertices within 1e-5 m (both in the body frame; with the saved
    translation, in camera space)."""
    import warnings

    import torch

    from smpler_deploy.body.standin import write_standin_smpl_pkl
    from smpler_deploy.model.checkpoint import DEFAULT_SEED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import smplx

    _, people, _ = astronaut_run
    write_params(people, tmp_path / "params.npz", tmp_path / "params.jsonl", {"test": True})
    a, meta = read_params(tmp_path / "params.npz")
    assert meta["test"] is True and a["vertices"].shape == (1, 6890, 3)
    pkl = write_standin_smpl_pkl(tmp_path / "SMPL_NEUTRAL.pkl", seed=DEFAULT_SEED)
    # the pkl holds exactly the body model inside the default model
    assert np.allclose(default_model.smpl_handler.smpl.v_template.numpy(),
                       smplx.SMPL(model_path=str(pkl)).v_template.numpy(), atol=1e-7)
    body = smplx.SMPL(model_path=str(pkl))
    t = lambda k: torch.from_numpy(np.asarray(a[k], np.float32))
    out = body(global_orient=t("global_orient"), body_pose=t("body_pose"), betas=t("betas"))
    v = out.vertices.detach().numpy()
    assert np.abs(v - a["vertices"]).max() < 1e-5
    out = body(global_orient=t("global_orient"), body_pose=t("body_pose"), betas=t("betas"), transl=t("transl"))
    assert np.abs(out.vertices.detach().numpy() - (a["vertices"] + a["transl"][:, None])).max() < 1e-5
    # rotation matrices as saved (smplx's pose2rot=False path)
    out = body(global_orient=t("global_orient_rotmat")[:, None], body_pose=t("body_pose_rotmat"),
               betas=t("betas"), pose2rot=False)
    assert np.abs(out.vertices.detach().numpy() - a["vertices"]).max() < 1e-5


def test_tracker_keeps_ids_across_frames():
    from smpler_deploy.pipeline.track import BoxTracker

    tr = BoxTracker()
    a, b = [10, 10, 50, 100], [200, 20, 50, 100]
    assert tr.update([a, b]).tolist() == [1, 2]
    assert tr.update([[204, 22, 50, 100], [13, 11, 50, 100]]).tolist() == [2, 1]  # order swapped, moved a bit
    assert tr.update([]).tolist() == []
    assert tr.update([[16, 12, 50, 100], [400, 50, 40, 90]]).tolist() == [1, 3]


def test_smoothing_reduces_jitter_and_stays_on_so3():
    import torch

    from smpler_deploy.body.lbs import axis_angle_to_rotmat
    from smpler_deploy.pipeline.track import ParamSmoother

    rng = np.random.default_rng(2)
    aa0 = rng.normal(scale=0.4, size=(24, 3))
    for kind in ("ema", "one-euro"):
        sm = ParamSmoother(kind, fps=30)
        raw, smooth = [], []
        for k in range(60):
            aa = aa0 + rng.normal(scale=0.05, size=(24, 3))
            rot = axis_angle_to_rotmat(torch.from_numpy(aa)).numpy()
            betas, transl = rng.normal(scale=0.05, size=10), np.array([0, 0, 3.0]) + rng.normal(scale=0.05, size=3)
            r, b, tr = sm(1, k, rot, betas, transl)
            assert np.allclose(r @ np.swapaxes(r, -1, -2), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(r), 1)
            raw.append(np.r_[rot.ravel(), betas, transl])
            smooth.append(np.r_[r.ravel(), b, tr])
        jitter = lambda s: np.abs(np.diff(np.asarray(s[10:]), axis=0)).mean()
        assert jitter(smooth) < 0.7 * jitter(raw), kind
    off = ParamSmoother("none")
    assert off(1, 0, np.eye(3)[None].repeat(24, 0), np.zeros(10), np.ones(3))[2].tolist() == [1, 1, 1]
