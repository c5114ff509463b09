"""preprocess.crops computes PIL's bilinear affine warp byte for byte (the compiled warp when numba is there)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smpler_deploy.preprocess import CropTransform, box_transform, crops


def _pil(image: np.ndarray, t: CropTransform) -> np.ndarray:
    """The definition: PIL's AFFINE transform, pixel-edge coordinates, black fill."""
    s, x0, y0 = t.scale, t.cx + 0.5 - t.side / 2, t.cy + 0.5 - t.side / 2
    return np.asarray(Image.fromarray(image).transform((224, 224), Image.Transform.AFFINE, (s, 0, x0, 0, s, y0),
                                                       resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)))


@pytest.mark.parametrize("hw", [(540, 960), (37, 23), (1, 1)])
def test_crops_equal_pil_bytes(hw):
    rng = np.random.default_rng(hw[0])
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    h, w = hw
    transforms = [box_transform(hw)]  # the whole image, padded square
    for _ in range(12):  # inside, across every edge, far out, up- and down-scaling, fractional centres
        side = float(rng.uniform(0.5, 3.0) * max(h, w))
        transforms.append(CropTransform(float(rng.uniform(-0.5, 1.5) * w), float(rng.uniform(-0.5, 1.5) * h), side))
    transforms.append(CropTransform(w / 2 - 0.5, h / 2 - 0.5, 224 / 7.0))  # 7x upscale: many equal samples
    got = crops(image, transforms)
    want = np.stack([_pil(image, t) for t in transforms])
    assert got.dtype == np.uint8 and got.shape == (len(transforms), 224, 224, 3)
    diff = np.argwhere(got != want)
    assert diff.size == 0, f"{len(diff)} bytes differ from PIL's, first at crop/row/col/channel {diff[0].tolist()}"


def test_crops_black_outside_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    c = crops(image, [CropTransform(49.5, 49.5, 200.0)])[0]  # the image fills the middle half of the crop
    assert (c[:56] == 0).all() and (c[:, :56] == 0).all() and (c[168:] == 0).all() and (c[:, 168:] == 0).all()
    assert (c[56:168, 56:168] == 200).all()
