"""Person crops (the one crop convention, `smpler_deploy.preprocess`) and batching them into session calls.

The crops of a frame, and of consecutive frames up to the session's maximum batch, go to the model in one
`Session.infer` call; the outputs are split back per frame.
"""

from __future__ import annotations

import numpy as np

from ..outputs import CROP_SIZE, SMPLOutput
from ..preprocess import BOX_MARGIN, CropTransform, box_transform, crops, normalize
from ..runtime.base import NonFiniteError, Session

MIN_BOX_PX = 2.0  # boxes thinner than this (after clipping to the frame) carry no person


def person_crops(image: np.ndarray, boxes, margin: float = BOX_MARGIN):
    """uint8 [H,W,3] + boxes [K,4] -> (float32 [K,3,224,224], [CropTransform] * K, kept box indices)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = np.flatnonzero(np.isfinite(b).all(1) & (b[:, 2] >= MIN_BOX_PX) & (b[:, 3] >= MIN_BOX_PX))  # NaN: no box
    transforms: list[CropTransform] = [box_transform(image.shape[:2], b[k], margin) for k in keep]
    if not transforms:
        return np.zeros((0, 3, CROP_SIZE, CROP_SIZE), np.float32), [], keep
    return normalize(crops(image, transforms)), transforms, keep


def infer_batched(session, crops_per_frame: list[np.ndarray], max_batch: int) -> list[SMPLOutput | None]:
    """Run every crop of several frames in as few session calls as `max_batch` allows; one output per frame
    (None for a frame without people: no call is made for it)."""
    counts = [len(c) for c in crops_per_frame]
    if sum(counts) == 0:
        return [None] * len(counts)
    x = np.concatenate([c for c in crops_per_frame if len(c)])
    parts = []
    for i in range(0, len(x), max(1, max_batch)):
        try:
            parts.append(session.infer(x[i:i + max_batch]))
        except NonFiniteError as e:  # indices of this call -> of all crops given, so the caller can drop them
            e.indices = [i + k for k in e.indices]
            raise
    merged = SMPLOutput(*(np.concatenate([np.asarray(p[f]) for p in parts]) for f in range(len(SMPLOutput._fields))))
    out, start = [], 0
    for n in counts:
        out.append(SMPLOutput(*(a[start:start + n] for a in merged)) if n else None)
        start += n
    return out


def session_max_batch(session: Session, requested: int | None) -> int:
    """The batch cap: the user's `batch` (`requested`), bounded by the session's `max_batch` (a TensorRT engine's
    profile)."""
    cap = requested or 8
    if session.max_batch is not None:
        cap = min(cap, session.max_batch)
    return max(1, cap)
