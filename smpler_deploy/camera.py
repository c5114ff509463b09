"""The full image's pinhole camera, and its tie to the model's weak-perspective camera of a crop.

The model predicts, per crop, a weak-perspective camera (s, tx, ty): a body point (X, Y) lands at normalized crop
coordinates s·(X + t_x) (and likewise y), mapped to image pixels by `preprocess.to_pixels`. Overlays and the
parameters file use one pinhole camera of focal length f (pixels) and principal point p on the full image instead:
u = f·X_c/Z_c + p_x (`Camera.project`), with the body translated into camera space, X_c = X + T.

Camera translation (SPIN / PARE / CLIFF's conversion of a crop's weak-perspective camera): the crop of side b
(image pixels; b = BOX_MARGIN x the longer box side) maps a body point to image pixels u = c_x + (b/2)·s·(X + t_x),
with c the crop centre in image pixels. The pinhole camera gives the same pixels for points at the body's depth when

    T_z = 2·f / (s·b),   T_x = t_x + 2·(c_x − p_x) / (s·b),   T_y = t_y + 2·(c_y − p_y) / (s·b).

Pixel coordinates are pixel centres (0 .. W−1), so the default principal point is ((W−1)/2, (H−1)/2) and the
default focal length the image diagonal in pixels (CLIFF's choice for unknown intrinsics). The model's camera frame
is x right, y down, z away from the camera (OpenCV's), so `vertices + transl` are camera coordinates. `c` and b are
taken from the crop transform through `preprocess.to_pixels`, the mapping the model's 2D joints are drawn with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .preprocess import CropTransform, to_pixels


@dataclass(frozen=True)
class Camera:
    """Pinhole camera in pixels (pixel centres at integers)."""

    focal: float
    principal_point: tuple[float, float]

    def project(self, points) -> np.ndarray:
        """[N,3] camera-space points (Z > 0) -> [N,2] image pixels. The rasteriser (`_raster.draw`) computes the
        same u = f·X/Z + p_x inside its compiled loop."""
        p = np.asarray(points, np.float64)
        return self.focal * p[:, :2] / p[:, 2:3] + np.asarray(self.principal_point, np.float64)


def default_focal(image_hw) -> float:
    h, w = image_hw
    return float(np.hypot(h, w))


def default_principal_point(image_hw) -> np.ndarray:
    h, w = image_hw
    return np.array([(w - 1) / 2.0, (h - 1) / 2.0])


def crop_camera(transform: CropTransform) -> tuple[np.ndarray, float]:
    """(crop centre c in image pixels, half side b/2): normalized crop coordinates (0,0) and (1,0) mapped through
    `to_pixels`."""
    p = to_pixels(np.array([[0.0, 0.0], [1.0, 0.0]]), transform)
    return p[0], float(p[1, 0] - p[0, 0])


def camera_translation(cam, transform: CropTransform, focal: float, principal_point) -> np.ndarray:
    """Weak-perspective (s, tx, ty) of a crop -> camera-space translation T [3] for the full-image pinhole camera."""
    s, tx, ty = (float(v) for v in np.asarray(cam, np.float64).reshape(3))
    c, half = crop_camera(transform)
    sb = max(s, 1e-9) * 2 * half  # s·b
    pp = np.asarray(principal_point, np.float64)
    return np.array([tx + 2 * (c[0] - pp[0]) / sb, ty + 2 * (c[1] - pp[1]) / sb, 2 * focal / sb])


def weak_camera(transl, transform: CropTransform, focal: float, principal_point) -> np.ndarray:
    """Inverse of `camera_translation` for a given crop: T [3] -> weak-perspective (s, tx, ty)."""
    tx, ty, tz = (float(v) for v in np.asarray(transl, np.float64).reshape(3))
    c, half = crop_camera(transform)
    s = 2 * focal / (max(tz, 1e-9) * 2 * half)
    sb = s * 2 * half
    pp = np.asarray(principal_point, np.float64)
    return np.array([s, tx - 2 * (c[0] - pp[0]) / sb, ty - 2 * (c[1] - pp[1]) / sb])
