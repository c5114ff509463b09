"""Triton kernels under TRITON_INTERPRET=1 against the reference attention (smpler_deploy.model.attention).

Tolerances:
- fp32: both sides accumulate in fp32 but in different orders (64- or 3136-term sums), so ~1e-6 relative; 2e-5
  absolute on O(1) outputs leaves a margin.
- fp16: compared with the reference evaluated in fp32 on the same fp16-rounded inputs. The kernel keeps logits
  and probabilities in fp32 and rounds once on store (fp16 eps 2^-11 ~ 4.9e-4 relative); the fp16 product
  tl.dot of the global kernel (fp16 probabilities, as the reference does) adds ~2^-11 relative per weight. With
  |agg| <= ~4 that is 2e-3..4e-3, so atol 1e-2 / rtol 1e-2. Against the fp16 reference itself (which also
  rounds its logits to fp16 before the softmax) the gap is about twice that, so 2e-2.
"""

import os

import pytest
import torch

from smpler_deploy.model import attention as ref
from smpler_deploy.plugins import kernels as K

pytestmark = pytest.mark.skipif(not K.triton_interprets(), reason="needs the Triton interpreter (CPU)")


def _local_inputs(b, s, c, j, nh, dtype, seed, r=4, span=1.3):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, s, s, c, generator=g).to(dtype)
    joints = (torch.rand(b, j, 2, generator=g) * 2 - 1) * span  # |coord| up to 1.3: windows clamp at the border
    joints[0, 0] = torch.tensor([-1.0, 1.0])  # exactly on corners / border
    if j > 1:
        joints[0, 1] = torch.tensor([1.3, -1.3])
    qk = (torch.randn(b, j, nh, c, generator=g) / c**0.5 * 3).to(dtype)  # logits of a few units
    table = torch.randn(nh, 2 * r + 1, 2 * r + 1, generator=g)
    return feat, joints, qk, table


def _check(out, expect, dtype, fp16_atol=1e-2):
    assert out.dtype == dtype and out.shape == expect.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, expect, atol=2e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(out.float(), expect.float(), atol=fp16_atol, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,s,c,j,nh,seed", [(1, 9, 16, 5, 2, 0), (3, 12, 32, 7, 4, 1), (3, 6, 48, 4, 1, 2)])
def test_local_small(dtype, b, s, c, j, nh, seed):
    feat, joints, qk, table = _local_inputs(b, s, c, j, nh, dtype, seed)
    out = K.local_attention(feat, joints, qk, table)
    _check(out, ref.local_attention(feat.float(), joints, qk.float(), table), dtype)
    if dtype == torch.float16:  # and against the all-fp16 reference
        _check(out, ref.local_attention(feat, joints, qk, table), dtype, fp16_atol=2e-2)


@pytest.mark.parametrize("radius", [1, 2])
def test_local_other_radius(radius):
    feat, joints, qk, table = _local_inputs(2, 10, 16, 6, 2, torch.float32, 5, r=radius)
    out = K.local_attention(feat, joints, qk, table, radius=radius)
    _check(out, ref.local_attention(feat, joints, qk, table, radius=radius), torch.float32)


def test_local_joint_on_pixel_grid():
    # Joints exactly on pixel centres: floor() boundaries; the window math must round exactly as the reference.
    s = 56
    feat, _, qk, table = _local_inputs(1, s, 32, 8, 4, torch.float32, 7)
    px = torch.tensor([0.0, 1.0, 27.0, 54.0, 55.0, 13.0, 41.0, 28.0])
    joints = torch.stack([px / (s - 1) * 2 - 1, px.flip(0) / (s - 1) * 2 - 1], -1)[None]
    out = K.local_attention(feat, joints, qk, table)
    _check(out, ref.local_attention(feat, joints, qk, table), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_local_real_size(dtype):
    feat, joints, qk, table = _local_inputs(1, 56, 128, 24, 4, dtype, 3)
    out = K.local_attention(feat, joints, qk, table)
    _check(out, ref.local_attention(feat.float(), joints, qk.float(), table), dtype)


def _global_inputs(b, ns, q, nh, c, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    keys = [torch.randn(b, n, c, generator=g).to(dtype) for n in ns]
    qk = (torch.randn(b, 4, q, nh, c, generator=g) / c**0.5 * 3).to(dtype)
    return keys, qk


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,ns,q,nh,c,seed", [
    (1, (100, 30, 7, 1), 3, 2, 16, 0),   # N not a multiple of BLOCK_N, a single-key scale
    (3, (64, 65, 129, 5), 9, 4, 32, 1),  # rows = 36: two BLOCK_M tiles, the second partial
    (3, (49, 196, 16, 4), 2, 3, 24, 2),  # C not a power of two
])
def test_global_small(dtype, b, ns, q, nh, c, seed):
    keys, qk = _global_inputs(b, ns, q, nh, c, dtype, seed)
    out = K.global_attention_multiscale(keys, qk)
    _check(out, ref.global_attention_multiscale([k.float() for k in keys], qk.float()), dtype)
    if dtype == torch.float16:
        _check(out, ref.global_attention_multiscale(keys, qk), dtype, fp16_atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_global_real_size(dtype):
    keys, qk = _global_inputs(1, (3136, 784, 196, 49), 26, 4, 128, dtype, 4)
    out = K.global_attention_multiscale(keys, qk)
    _check(out, ref.global_attention_multiscale([k.float() for k in keys], qk.float()), dtype)


def test_errors_and_metadata():
    from smpler_deploy.errors import SmplerError

    assert K.TRITON_VERSION_PIN == "3.9.0"
    assert os.environ.get("TRITON_INTERPRET") == "1"
    feat, joints, qk, table = _local_inputs(1, 8, 16, 2, 2, torch.float32, 0)
    with pytest.raises(SmplerError, match="differs from the feature dtype"):
        K.local_attention(feat, joints, qk.half(), table)
    with pytest.raises(SmplerError, match="powers of two"):
        K.local_attention(feat, joints, qk, table, radius=3)
    with pytest.raises(SmplerError, match="table"):
        K.local_attention(feat, joints, qk, table[:, :5, :5])
    keys, gqk = _global_inputs(1, (8, 4, 2, 1), 2, 2, 16, torch.float32, 0)
    with pytest.raises(SmplerError, match="4 scales"):
        K.global_attention_multiscale(keys[:3], gqk)
    with pytest.raises(SmplerError, match="bfloat16"):
        K.global_attention_multiscale([k.bfloat16() for k in keys], gqk.bfloat16())
