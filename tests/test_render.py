"""Overlay rendering and mesh writers (no model needed): the z-buffer rasteriser against analytic cases (a square
at a known depth, a tilted plane, two overlapping triangles, interpenetrating planes, a person behind another), the
painter's fallback."""

import numpy as np
import pytest

from mesh_files import ply_counts
from smpler_deploy import render
from smpler_deploy.camera import Camera
from smpler_deploy.errors import SmplerError
from smpler_deploy.preprocess import CropTransform, to_pixels
from smpler_deploy.render import (AMBIENT, LIGHT, face_shading, model_label, rasterize, render_overlay, render_people,
                                  save_png, write_obj, write_ply)

CAM = Camera(100.0, (15.5, 11.5))  # a 32 x 24 image, principal point at its centre
HW = (24, 32)


def backproject(u, v, z, cam=CAM):
    """Image point (pixel coordinates) at depth z -> camera-space point."""
    return [(u - cam.principal_point[0]) * z / cam.focal, (v - cam.principal_point[1]) * z / cam.focal, z]


def square(u0, v0, u1, v1, z):
    """Two triangles whose corners project to the image rectangle [u0,u1] x [v0,v1] at depth z."""
    v = np.array([backproject(u0, v0, z), backproject(u1, v0, z), backproject(u1, v1, z), backproject(u0, v1, z)])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_square_at_known_depth_covers_exactly_its_pixels():
    v, f = square(4.5, 2.5, 14.5, 9.5, z=2.0)  # pixel edges around columns 5..14, rows 3..9
    r = rasterize([v], f, CAM, HW)
    expected = np.zeros(HW, bool)
    expected[3:10, 5:15] = True
    assert np.array_equal(r.mesh >= 0, expected)
    assert np.allclose(r.depth[expected], 2.0, rtol=1e-6) and np.isinf(r.depth[~expected]).all()
    # a plane facing the camera: normal (0, 0, +-1), two-sided Lambert
    assert np.allclose(r.shade[expected], AMBIENT + (1 - AMBIENT) * abs(LIGHT[2]), atol=1e-6)
    # the two triangles share the diagonal, which runs through pixel centres: each such pixel belongs to one
    one, two = rasterize([v], f[:1], CAM, HW).mesh >= 0, rasterize([v], f[1:], CAM, HW).mesh >= 0
    assert not (one & two).any() and np.array_equal(one | two, expected)


def test_tilted_plane_depth_is_perspective_correct():
    """Plane Z = 3 + 0.5 X: the ray through pixel u meets it at Z = 3 / (1 - 0.5 (u - px) / f)."""
    xs = np.array([-0.6, 0.6])
    corners = np.array([[x, y, 3 + 0.5 * x] for x, y in ((xs[0], -0.4), (xs[1], -0.4), (xs[1], 0.4), (xs[0], 0.4))])
    r = rasterize([corners], np.array([[0, 1, 2], [0, 2, 3]]), CAM, HW)
    ys, xpix = np.nonzero(r.mesh >= 0)
    assert len(ys) > 100
    want = 3.0 / (1 - 0.5 * (xpix - CAM.principal_point[0]) / CAM.focal)
    assert np.allclose(r.depth[ys, xpix], want, rtol=1e-5)


def test_nearer_triangle_wins_in_any_order_and_interpenetration_is_exact():
    far, f = square(2.5, 2.5, 20.5, 20.5, z=3.0)
    near, _ = square(10.5, 5.5, 28.5, 15.5, z=2.0)
    for meshes, near_id in (([far, near], 1), ([near, far], 0)):
        r = rasterize(meshes, f, CAM, HW)
        assert (r.mesh[6:16, 11:29] == near_id).all() and (r.mesh[3:21, 3:11] == 1 - near_id).all()
        assert np.allclose(r.depth[6:16, 11:29], 2.0)
    # a plane tilted through Z = 3 crosses the flat one: left of u = px it is nearer, right of it farther
    tilt = np.array([backproject(2.5, 2.5, 3.0), backproject(28.5, 2.5, 3.0), backproject(28.5, 20.5, 3.0),
                     backproject(2.5, 20.5, 3.0)])
    tilt[:, 2] = 3.0 + 0.5 * tilt[:, 0]
    flat, _ = square(2.5, 2.5, 28.5, 20.5, z=3.0)
    m = rasterize([flat, tilt], f, CAM, HW).mesh
    assert (m[5:18, 4:14] == 1).all() and (m[5:18, 18:27] == 0).all()  # painter's order gets one side wrong


def _inside(tri_uv, hw):
    """Pixel centres strictly inside a projected triangle (an independent sign test; no centre lies on an edge of
    the triangles below)."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    (x0, y0), (x1, y1), (x2, y2) = tri_uv
    e = [(xb - xa) * (ys - ya) - (yb - ya) * (xs - xa) for (xa, ya), (xb, yb) in
         (((x0, y0), (x1, y1)), ((x1, y1), (x2, y2)), ((x2, y2), (x0, y0)))]
    assert min(np.abs(k).min() for k in e) > 1e-3
    return ((e[0] > 0) & (e[1] > 0) & (e[2] > 0)) | ((e[0] < 0) & (e[1] < 0) & (e[2] < 0))


def test_two_overlapping_triangles_nearer_covers_the_overlap():
    """Two single triangles at depths 2 and 3 whose projections overlap: every pixel centre inside the near one
    shows it at Z = 2, the rest of the far one shows it at Z = 3, nothing else is drawn, in either list order."""
    near_uv, far_uv = [(3.2, 2.7), (25.9, 5.1), (8.3, 20.6)], [(12.1, 1.4), (29.6, 18.3), (4.4, 14.9)]
    near = np.array([backproject(u, v, 2.0) for u, v in near_uv])
    far = np.array([backproject(u, v, 3.0) for u, v in far_uv])
    in_near, in_far = _inside(near_uv, HW), _inside(far_uv, HW)
    assert (in_near & in_far).sum() > 50 and (in_far & ~in_near).sum() > 50  # a real overlap, both visible
    tri = np.array([[0, 1, 2]])
    for meshes, near_id in (([near, far], 0), ([far, near], 1)):
        r = rasterize(meshes, tri, CAM, HW)
        assert np.array_equal(r.mesh == near_id, in_near)
        assert np.array_equal(r.mesh == 1 - near_id, in_far & ~in_near)
        assert np.array_equal(r.mesh >= 0, in_near | in_far)
        assert np.allclose(r.depth[in_near], 2.0, rtol=1e-6) and np.allclose(r.depth[in_far & ~in_near], 3.0,
                                                                              rtol=1e-6)


@pytest.fixture(scope="module")
def body():
    from smpler_deploy.body.standin import make_standin_body_model

    d = make_standin_body_model(0)
    return np.asarray(d.v_template, np.float64) * [1, -1, -1], np.asarray(d.faces)  # y down, z away


def test_person_behind_another_is_hidden_where_they_overlap(body):
    verts, faces = body
    cam = Camera(1101.4, (479.5, 269.5))  # 960 x 540, focal = the image diagonal (the default)
    front, back = {"vertices": verts, "transl": [0.0, 0.0, 4.5]}, {"vertices": verts, "transl": [0.6, 0.0, 6.5]}
    r = rasterize([verts + front["transl"], verts + back["transl"]], faces, cam, (540, 960))
    alone = rasterize([verts + back["transl"]], faces, cam, (540, 960)).mesh >= 0
    front_px = r.mesh == 0
    assert front_px.sum() > 10000 and (r.mesh == 1).sum() > 1000
    assert (alone & front_px).sum() > 1000  # the back person is hidden there ...
    assert np.array_equal(r.mesh == 1, alone & ~front_px)  # ... and visible everywhere else
    assert np.all(r.depth[front_px] < 4.5 + 0.3) and np.all(r.depth[r.mesh == 1] > 6.5 - 0.3)
    img = np.full((540, 960, 3), 40, np.uint8)
    a = render_people(img, [front, back], faces, cam, alpha=1.0)
    b = render_people(img, [back, front], faces, cam, alpha=1.0)  # list order does not matter
    assert np.array_equal(a, b) and np.array_equal((a != 40).any(axis=2), r.mesh >= 0)


def test_painter_fallback_without_numba(body, monkeypatch):
    """An install without numba still draws overlays (PIL polygons, far to near) covering the same silhouette."""
    verts, faces = body
    cam = Camera(1101.4, (479.5, 269.5))
    img = np.full((540, 960, 3), 40, np.uint8)
    people = [{"vertices": verts, "transl": [0.0, 0.0, 4.5]}]
    z = render_people(img, people, faces, cam, alpha=1.0)
    monkeypatch.setattr(render, "_numba", lambda: None)
    assert render.backend() == "pil"
    p = render_people(img, people, faces, cam, alpha=1.0)
    mz, mp = (z != 40).any(axis=2), (p != 40).any(axis=2)
    assert (mz & ~mp).sum() < 0.01 * mz.sum() and mp.sum() < 1.06 * mz.sum()  # PIL also fills the outlines
    with pytest.raises(SmplerError, match="numba"):
        rasterize([verts], faces, cam, (540, 960))


def quad(z_front=0.0, z_back=0.1):
    """Two squares: a small near one (front) inside a large far one (back)."""
    v = np.array([[-.5, -.5, z_back], [.5, -.5, z_back], [.5, .5, z_back], [-.5, .5, z_back],
                  [-.2, -.2, z_front], [.2, -.2, z_front], [.2, .2, z_front], [-.2, .2, z_front]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    return v, f


def test_normalized_crop_coordinates_through_crop_transform():
    t = CropTransform(cx=150.5, cy=100.5, side=112.0)  # 224 crop px -> 112 image px (scale 0.5)
    uv = to_pixels(np.array([[0.0, 0.0], [1.0, -1.0]]), t)
    assert uv[0] == pytest.approx(t.crop_to_image([112.0, 112.0]))  # origin -> crop centre
    assert uv[1] == pytest.approx(t.crop_to_image([224.0, 0.0]))  # x2d = 1, y2d = -1 -> right, top


def test_overlay_draws_near_over_far():
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
    assert ply_counts(p) == (8, 4)
    raw = p.read_bytes()
    body = raw[raw.index(b"end_header\n") + len(b"end_header\n"):]
    assert len(body) == 8 * (12 + 3) + 4 * (1 + 12)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writers leave no temp files


def test_reused_frame_buffers_keep_nothing_of_the_previous_frame(body):
    """draw_meshes reuses its thread's buffers from frame to frame: the next frame shows only its own people."""
    verts, faces = body
    cam = Camera(1101.4, (479.5, 269.5))
    img = np.full((540, 960, 3), 40, np.uint8)
    render.draw_meshes(img, [verts + [0.0, 0.0, 3.0]], faces, cam, alpha=1.0)  # a near, large person
    moved = verts + [1.5, 0.0, 7.0]
    out = render.draw_meshes(img, [moved], faces, cam, alpha=1.0)
    assert np.array_equal((out != 40).any(axis=2), rasterize([moved], faces, cam, (540, 960)).mesh >= 0)
    assert np.array_equal(render.draw_meshes(img, [], faces, cam), img)
