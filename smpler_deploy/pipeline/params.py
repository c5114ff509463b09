"""SMPL parameters per frame and person, and the camera that places each body in the full image.

From the model's outputs: `global_orient` (joint 0) and `body_pose` (joints 1..23) as rotation matrices (the
model's `rotmat`, local frames, smplx's convention) and as axis-angle vectors (what `smplx.SMPL(global_orient=,
body_pose=)` takes), `betas` (10), the weak-perspective camera (s, tx, ty) of the crop, and a camera-space
translation for a pinhole camera of focal length f (pixels) on the full image (`camera.camera_translation`, where
the conversion and the default intrinsics are written down).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..camera import camera_translation, default_focal, default_principal_point
from ..errors import SmplerError
from ..fileio import atomic_path, write_text_atomic
from ..preprocess import to_pixels

FORMAT_VERSION = 1


def rotmat_to_axis_angle(rotmat) -> np.ndarray:
    """[...,3,3] -> [...,3] (scipy; the model's matrices are orthonormal by construction)."""
    from scipy.spatial.transform import Rotation

    r = np.asarray(rotmat, np.float64)
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(*r.shape[:-2], 3)


@dataclass
class PersonParams:
    frame: int
    person: int  # index within the frame
    track_id: int  # -1 without tracking
    box: np.ndarray  # [4] x, y, w, h (image pixels)
    score: float
    crop: np.ndarray  # [3] crop centre x, y and side (image pixels)
    rotmat: np.ndarray  # [24,3,3]
    betas: np.ndarray  # [10]
    cam: np.ndarray  # [3] weak perspective (s, tx, ty)
    transl: np.ndarray  # [3] camera-space translation (metres)
    focal_length: float
    principal_point: np.ndarray  # [2]
    image_size: tuple[int, int]  # (height, width)
    joints2d: np.ndarray  # [24,2] SMPL joints in image pixels (overlay mapping)
    time_s: float | None = None
    vertices: np.ndarray | None = field(default=None, repr=False)  # [6890,3] body frame, when kept

    @property
    def axis_angle(self) -> np.ndarray:  # [24,3]
        return rotmat_to_axis_angle(self.rotmat)

    def record(self) -> dict:
        aa = self.axis_angle
        r = lambda a: np.asarray(a, np.float64).round(7).tolist()
        return {
            "frame": self.frame, "time_s": self.time_s, "person": self.person, "track_id": self.track_id,
            "box": r(self.box), "score": round(float(self.score), 5), "crop": r(self.crop),
            "global_orient": r(aa[0]), "body_pose": r(aa[1:].reshape(-1)),
            "global_orient_rotmat": r(self.rotmat[0]), "body_pose_rotmat": r(self.rotmat[1:]),
            "betas": r(self.betas), "cam": r(self.cam), "transl": r(self.transl),
            "focal_length": float(self.focal_length), "principal_point": r(self.principal_point),
            "image_size": list(self.image_size), "joints2d": np.asarray(self.joints2d).round(2).tolist(),
        }


def people_params(out, transforms, dets, keep, frame, focal=None, principal_point=None, track_ids=None,
                  keep_vertices: bool = False) -> list[PersonParams]:
    """One frame's session output (K people) -> K `PersonParams`."""
    image_hw = frame.image.shape[:2]
    f = default_focal(image_hw) if focal is None else float(focal)
    pp = default_principal_point(image_hw) if principal_point is None else np.asarray(principal_point, np.float64)
    people = []
    for i, (t, k) in enumerate(zip(transforms, keep)):
        cam = np.asarray(out.cam[i], np.float64)
        people.append(PersonParams(
            frame=frame.index, person=i, track_id=int(track_ids[i]) if track_ids is not None else -1,
            box=np.asarray(dets.boxes[k], np.float64), score=float(dets.scores[k]),
            crop=np.array([t.cx, t.cy, t.side]), rotmat=np.asarray(out.rotmat[i], np.float64),
            betas=np.asarray(out.betas[i], np.float64), cam=cam,
            transl=camera_translation(cam, t, f, pp), focal_length=f, principal_point=pp,
            image_size=tuple(int(v) for v in image_hw), joints2d=to_pixels(out.smpl_joints2d[i], t),
            time_s=frame.time_s, vertices=np.asarray(out.vertices[i], np.float32) if keep_vertices else None,
        ))
    return people


def stack_params(people: list[PersonParams]) -> dict[str, np.ndarray]:
    """Arrays over all people of all frames (row n = one person in one frame)."""
    n = len(people)
    g = lambda name, shape, dt=np.float32: (np.stack([np.asarray(getattr(p, name)) for p in people]).astype(dt)
                                            if n else np.zeros((0, *shape), dt))
    rot = g("rotmat", (24, 3, 3))
    aa = rotmat_to_axis_angle(rot.astype(np.float64)).astype(np.float32) if n else np.zeros((0, 24, 3), np.float32)
    arrays = {
        "frame": g("frame", (), np.int64), "person": g("person", (), np.int64), "track_id": g("track_id", (), np.int64),
        "box": g("box", (4,)), "score": g("score", ()), "crop": g("crop", (3,)),
        "global_orient": aa[:, 0], "body_pose": aa[:, 1:].reshape(n, 69),
        "global_orient_rotmat": rot[:, 0], "body_pose_rotmat": rot[:, 1:],
        "betas": g("betas", (10,)), "cam": g("cam", (3,)), "transl": g("transl", (3,)),
        "focal_length": g("focal_length", ()), "principal_point": g("principal_point", (2,)),
        "image_size": g("image_size", (2,), np.int64), "joints2d": g("joints2d", (24, 2)),
        "time_s": np.array([np.nan if p.time_s is None else p.time_s for p in people], np.float64),
    }
    if n and all(p.vertices is not None for p in people):
        arrays["vertices"] = g("vertices", (6890, 3))
    return arrays


def write_params(people: list[PersonParams], npz_path, jsonl_path, meta: dict) -> None:
    """The parameters as .npz (arrays, `meta` as a JSON string) and JSON lines (a header line, then one line per
    person per frame); both written atomically."""
    arrays = stack_params(people)
    head = {"format": "smpler-run parameters", "version": FORMAT_VERSION, **meta}
    if npz_path is not None:
        with atomic_path(npz_path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(head)), **arrays)
    if jsonl_path is not None:
        lines = [json.dumps({"meta": head})] + [json.dumps(p.record()) for p in people]
        write_text_atomic(jsonl_path, "\n".join(lines) + "\n")


def read_params(npz_path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) from a parameters .npz (no pickles are loaded)."""
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise SmplerError(f"{npz_path}: not a smpler-run parameters file ({e.__class__.__name__})")
    meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    return arrays, meta

