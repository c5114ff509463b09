"""Overlay rendering and mesh writers (no model needed)."""

import numpy as np
import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.preprocess import CropTransform
from smpler_deploy.render import (face_shading, model_label, project, read_ply_counts, render_overlay, save_png,
                                  write_obj, write_ply)


def quad(z_front=0.0, z_back=0.1):
    """Two squares: a small near one (front) inside a large far one (back)."""
    v = np.array([[-.5, -.5, z_back], [.5, -.5, z_back], [.5, .5, z_back], [-.5, .5, z_back],
                  [-.2, -.2, z_front], [.2, -.2, z_front], [.2, .2, z_front], [-.2, .2, z_front]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    return v, f


def test_projection_through_crop_transform():
    t = CropTransform(cx=150.5, cy=100.5, side=112.0)  # 224 crop px -> 112 image px (scale 0.5)
    uv = project(np.array([[0.0, 0.0, 5.0], [1.0, -1.0, 0.0]]), cam=(1.0, 0.0, 0.0), transform=t)
    assert uv[0] == pytest.approx(t.crop_to_image([112.0, 112.0]))  # origin -> crop centre
    assert uv[1] == pytest.approx(t.crop_to_image([224.0, 0.0]))  # x2d = 1, y2d = -1 -> right, top


def test_painter_draws_near_over_far():
    v, f = quad()
    img = np.zeros((224, 224, 3), np.uint8)
    out = render_overlay(img, v, f, cam=(1.0, 0.0, 0.0), alpha=1.0)
    centre, ring = out[112, 112], out[112, 112 + 40]  # centre: front square; ring: back square only
    assert centre.any() and ring.any() and out[5, 5].sum() == 0
    # both are facing the light equally, so colours match; reversing depths must still show the front square
    out2 = render_overlay(img, v * [1, 1, -1], f, cam=(1.0, 0.0, 0.0), alpha=1.0)
    assert np.array_equal(out2[112, 112], centre)


def test_shading_is_two_sided_and_bounded():
    v, f = quad()
    s1, s2 = face_shading(v, f), face_shading(v, f[:, ::-1])
    assert np.allclose(s1, s2) and (s1 >= 0.35).all() and (s1 <= 1.0).all()


def test_label_joints_and_errors(tmp_path):
    v, f = quad()
    img = np.full((100, 160, 3), 200, np.uint8)
    t = CropTransform(cx=79.5, cy=49.5, side=100.0)
    out = render_overlay(img, v, f, (0.8, 0, 0), t, joints2d=np.zeros((24, 2)), label=model_label(True, True))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[2:15, 2:60] == 0).any()  # dark label banner
    assert model_label(False, False) is None and "stand-in" in model_label(False, True)
    p = save_png(out, tmp_path / "o.png")
    assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SmplerError):
        render_overlay(img, v, f + 10, (1, 0, 0))


def test_obj_ply(tmp_path):
    v, f = quad()
    obj = write_obj(tmp_path / "m.obj", v, f, comment="hello\nworld").read_text().splitlines()
    assert obj[:2] == ["# hello", "# world"] and obj[2].startswith("v ") and obj[-1] == "f 5 7 8"
    p = write_ply(tmp_path / "m.ply", v, f, colors=(255, 0, 0), comment="c")
    assert read_ply_counts(p) == (8, 4)
    raw = p.read_bytes()
    body = raw[raw.index(b"end_header\n") + len(b"end_header\n"):]
    assert len(body) == 8 * (12 + 3) + 4 * (1 + 12)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writers leave no temp files
