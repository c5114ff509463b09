"""The whole forward runs on a non-CPU device: every tensor it creates follows its inputs' device.

`meta` tensors carry shapes and dtypes but no data, so a tensor factory without `device=` (torch.arange,
torch.eye, ...) meets a meta tensor in the next op and raises a device mismatch, exactly as it would on CUDA.
Runs on any CPU machine.
"""

from __future__ import annotations

import pytest
import torch

from smpler_deploy.body import lbs as L
from smpler_deploy.model import attention as A
from smpler_deploy.model.smpler import SMPLer

META = torch.device("meta")
SHAPES = {"vertices": (2, 6890, 3), "joints": (2, 14, 3), "smpl_joints": (2, 24, 3), "smpl_joints2d": (2, 24, 2),
          "rotmat": (2, 24, 3, 3), "betas": (2, 10), "cam": (2, 3)}


@pytest.fixture(scope="module")
def meta_model():
    model = SMPLer("smpler").eval()  # random init on CPU, then moved: what a user does with .to("cuda")
    return model.to(META)


def _check(out):
    for name, shape in SHAPES.items():
        t = getattr(out, name)
        assert t.device.type == "meta" and tuple(t.shape) == shape and t.dtype == torch.float32, name


@pytest.mark.parametrize("mode", ["torch", "official_style", "full_mesh_stages", "plugin", "triton"])
def test_forward_on_meta(meta_model, mode):
    m = meta_model
    m.official_style = mode == "official_style"
    m.full_mesh_stages = mode == "full_mesh_stages"
    m.set_attention(mode if mode in ("plugin", "triton") else "torch")
    try:
        with torch.no_grad():
            _check(m(torch.empty(2, 3, 224, 224, device=META)))
    finally:
        m.official_style = m.full_mesh_stages = False
        m.set_attention("torch")


def test_fp16_policy_on_meta():
    model = SMPLer("smpler").eval().to(META).set_precision("fp16")
    with torch.no_grad():
        _check(model(torch.empty(2, 3, 224, 224, device=META)))


def test_factories_follow_input_device():
    """The two factories that lacked `device=` (window offsets, identity of the pose feature / Rodrigues)."""
    j = torch.empty(1, 24, 2, device=META)
    assert all(t.device == META for t in A.window_coords(j, 56))
    assert L.axis_angle_to_rotmat(torch.empty(3, 3, device=META)).device == META
    verts, joints = L.lbs(torch.empty(1, 24, 3, 3, device=META), torch.empty(1, 10, device=META),
                          torch.empty(6890, 3, device=META), torch.empty(6890 * 3, 10, device=META),
                          torch.empty(207, 6890 * 3, device=META), torch.empty(6890, 24, device=META),
                          torch.empty(24, 3, device=META), torch.empty(72, 10, device=META))
    assert verts.device == joints.device == META and tuple(verts.shape) == (1, 6890, 3)
