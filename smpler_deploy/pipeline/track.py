"""Track IDs across frames (norfair's tracker on box corners, IoU distance) and optional temporal smoothing of
each track's SMPL parameters (exponential moving average or the One-Euro filter).

Smoothing works on what is continuous in time: rotation matrices (filtered entry-wise, then projected back onto
SO(3) with an SVD), betas, and the camera-space translation (the weak-perspective camera is relative to a crop
that moves with the box, so it is re-derived from the smoothed translation for the same crop).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OptionError

SMOOTHERS = ("none", "ema", "one-euro")


class BoxTracker:
    """IDs for boxes (x, y, w, h): a box continues the track it overlaps (IoU > 1 - distance_threshold). Between
    detections (`--detect-every N`: `update` every N-th frame, `predict` on the others) the tracks' Kalman filters
    (norfair's constant-velocity model on the box corners) carry the boxes forward."""

    def __init__(self, distance_threshold: float = 0.7, hit_counter_max: int = 10, period: int = 1):
        from norfair import Tracker

        self.period = max(1, int(period))  # frames between updates with detections
        # a track lives through hit_counter_max frames without detections; it must outlast the gap between them
        self.tracker = Tracker(distance_function="iou", distance_threshold=distance_threshold,
                               hit_counter_max=max(hit_counter_max, 2 * self.period), initialization_delay=0)

    def update(self, boxes, scores=None) -> np.ndarray:
        """Boxes of this frame -> track ids [K] (1-based; a box no track took gets a new id)."""
        from norfair import Detection

        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        sc = np.ones(len(b)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        dets = [Detection(np.array([[x, y], [x + w, y + h]]), data=(i, float(sc[i])))
                for i, (x, y, w, h) in enumerate(b)]
        ids = np.full(len(b), -1, np.int64)
        for obj in self.tracker.update(dets, period=self.period):
            d = obj.last_detection
            if any(d is det for det in dets):
                ids[d.data[0]] = obj.id
        return ids

    def predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance one frame without detections: (boxes [K,4] where the live tracks are predicted, their ids [K],
        the score of each track's last detection [K])."""
        objs = self.tracker.update([])
        boxes = np.array([[*o.estimate[0], *(o.estimate[1] - o.estimate[0])] for o in objs], np.float64)
        ids = np.array([o.id for o in objs], np.int64)
        scores = np.array([o.last_detection.data[1] for o in objs], np.float64)
        return boxes.reshape(-1, 4), ids, scores


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation(s) to [...,3,3] matrices (SVD, determinant +1)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


class _EMA:
    def __init__(self, alpha: float = 0.5):
        self.alpha, self.x = alpha, None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        self.x = x if self.x is None else self.alpha * x + (1 - self.alpha) * self.x
        return self.x


class _OneEuro:
    """Casiez et al. 2012: a low-pass whose cutoff rises with speed (little lag on fast moves, little jitter at
    rest)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.3, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(dt: float, cutoff) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x
        dt = max(t - self.t, 1e-6)
        a_d = self._alpha(dt, self.d_cutoff)
        self.dx = a_d * (x - self.x) / dt + (1 - a_d) * self.dx
        a = self._alpha(dt, self.min_cutoff + self.beta * np.abs(self.dx))
        self.x, self.t = a * x + (1 - a) * self.x, t
        return self.x


class ParamSmoother:
    """Per-track filters over (rotmat [24,3,3], betas [10], transl [3]); tracks unseen for a while are dropped."""

    def __init__(self, kind: str, fps: float | None = None, forget_after: int = 30):
        if kind not in SMOOTHERS:
            raise OptionError("smooth", kind, f"expected one of {', '.join(SMOOTHERS)}")
        self.kind, self.dt = kind, 1.0 / (fps or 30.0)
        self.filters: dict[int, object] = {}
        self.last_seen: dict[int, int] = {}
        self.forget_after = forget_after

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def __call__(self, track_id: int, frame: int, rotmat, betas, transl, time_s: float | None = None):
        if not self.enabled or track_id < 0:
            return rotmat, betas, transl
        for tid in [t for t, f in self.last_seen.items() if frame - f > self.forget_after]:
            self.filters.pop(tid, None)
            self.last_seen.pop(tid, None)
        if track_id in self.last_seen and frame - self.last_seen[track_id] > 1:
            self.filters.pop(track_id, None)  # a gap: start afresh rather than blend across it
        self.last_seen[track_id] = frame
        f = self.filters.setdefault(track_id, _EMA() if self.kind == "ema" else _OneEuro())
        x = np.concatenate([np.asarray(rotmat, np.float64).reshape(-1), np.asarray(betas, np.float64),
                            np.asarray(transl, np.float64)])
        y = f(x, time_s if time_s is not None else frame * self.dt)
        return project_to_so3(y[:216].reshape(24, 3, 3)), y[216:226], y[226:229]
