"""What the Python-backend model does per request, as plain numpy functions (tested without a server).

- crop: image uint8 [H,W,3] + box (x, y, w, h) -> model input float32 [3,224,224] and the crop (cx, cy, side),
  through `smpler_deploy.preprocess`, the single crop convention every backend shares.
- uncrop: 2D joints (normalized crop coordinates) + crop -> image pixels, through the same `CropTransform`.
- infer: the requests of one dynamic batch run as ONE session call; a request that is not a valid crop batch
  gets its own error and the others still get their answers.
"""

from __future__ import annotations

import numpy as np

from ..errors import SmplerError
from ..outputs import CROP_SIZE, OUTPUT_NAMES
from ..runtime.base import NonFiniteError
from ..preprocess import CropTransform, crop_person, to_pixels


def crop_one(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H,W,3] + [4] box -> (float32 [3,224,224], float32 [3] = cx, cy, side)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SmplerError(f"image: expected uint8 [H,W,3] RGB, got {image.dtype} {list(image.shape)}")
    box = np.asarray(box, np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise SmplerError(f"box: expected four finite numbers x,y,w,h, got {box.tolist()}")
    x, t = crop_person(image, box)  # checked above: already uint8 [H,W,3], so the image passes through as is
    return x, np.array([t.cx, t.cy, t.side], np.float32)


def uncrop_joints(joints2d: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """[24,2] normalized crop coordinates + (cx, cy, side) -> [24,2] image pixels (float32)."""
    cx, cy, side = (float(v) for v in np.asarray(crop_box).reshape(3))
    return to_pixels(joints2d, CropTransform(cx, cy, side, CROP_SIZE)).astype(np.float32)


def check_crops(images: np.ndarray) -> np.ndarray:
    """One request's model input: float32 [n,3,224,224], finite (a NaN would spread through the whole batch)."""
    if images.dtype != np.float32 or images.ndim != 4 or images.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
        raise SmplerError(f"images: expected float32 [n,3,{CROP_SIZE},{CROP_SIZE}], got {images.dtype} "
                          f"{list(images.shape)}")
    if not np.isfinite(images).all():
        raise SmplerError("images: contains NaN or Inf; expected finite ImageNet-normalized pixels")
    return images


def infer_batch(session, requests: list[np.ndarray]) -> list[dict | SmplerError]:
    """Each request's crops -> its outputs {name: array}, or its error; valid requests run as one batch."""
    results: list[dict | SmplerError] = []
    good: list[tuple[int, np.ndarray]] = []
    for i, images in enumerate(requests):
        try:
            good.append((i, check_crops(images)))
            results.append({})
        except SmplerError as e:
            results.append(e)
    while good:
        batch = np.concatenate([x for _, x in good]) if len(good) > 1 else good[0][1]
        try:
            out = session.infer(batch).numpy()
        except NonFiniteError as e:  # NaN/Inf outputs: only the requests they belong to fail; the rest run again
            starts = np.cumsum([0] + [len(x) for _, x in good])
            hit = {int(np.searchsorted(starts, j, side="right")) - 1 for j in e.indices}
            for k in hit:
                results[good[k][0]] = SmplerError(f"the model gave NaN/Inf in output {e.output} for this request")
            good = [g for k, g in enumerate(good) if k not in hit]
            continue
        start = 0
        for i, x in good:
            n = len(x)
            results[i] = {name: np.ascontiguousarray(getattr(out, name)[start:start + n]) for name in OUTPUT_NAMES}
            start += n
        break
    return results
