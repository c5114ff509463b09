"""The whole model with its attention swapped: Triton kernels (CPU: through the interpreter) give the torch path's
outputs, and the plugin-mode ops (what the ONNX export traces; eager, they run our reference attention) give the
official forward's (tests/official_ops.py, grid_sample sampling and textbook attention), fp32, on real crops."""

from __future__ import annotations

import copy

import pytest
import torch

# Must come before anything imports triton: sets TRITON_INTERPRET=1 when there is no CUDA device.
from smpler_deploy.plugins import kernels  # noqa: F401
from official_ops import official_forward
from smpler_deploy.model.checkpoint import calibration_batch
from smpler_deploy.outputs import SMPLOutput

VERTS_TOL = 1e-4  # metres


@pytest.fixture(scope="module")
def images():
    # one crop: the interpreter runs every attention call in Python, and batched kernels are test_kernels' cases
    return torch.from_numpy(calibration_batch(1))


@pytest.fixture(scope="module")
def reference(default_model, images):
    assert default_model.attention == "torch"
    with torch.inference_mode():
        return default_model(images)


def _run(default_model, kind, images):
    model = copy.deepcopy(default_model).set_attention(kind)
    assert model.attention == kind
    with torch.inference_mode():
        out = model(images)
    assert default_model.attention == "torch"  # the shared fixture is untouched
    return out


def _compare(out, ref, verts_tol):
    assert isinstance(out, SMPLOutput)
    for name, a, b in zip(SMPLOutput._fields, out, ref):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32, name
        assert torch.isfinite(a).all(), name
    err = (out.vertices - ref.vertices).abs().max().item()
    assert err < verts_tol, f"vertices differ by {err:.3g} m"
    assert (out.joints - ref.joints).abs().max().item() < verts_tol
    assert (out.cam - ref.cam).abs().max().item() < 1e-4
    assert (out.betas - ref.betas).abs().max().item() < 1e-3
    assert (out.rotmat - ref.rotmat).abs().max().item() < 1e-3
    return err


# ~15 s on one core (every attention call runs through the Triton interpreter): not marked slow
def test_triton_attention_matches_torch(default_model, images, reference):
    out = _run(default_model, "triton", images)
    err = _compare(out, reference, VERTS_TOL)
    print(f"\ntriton vs torch: max |dv| = {err:.3g} m")


def test_plugin_attention_eager_matches_official(default_model, images):
    """Independent of our attention functions (the plugin ops call them eagerly, so comparing with the torch path
    would compare them with themselves): the oracle is the literal transcription of the official forward."""
    out = _run(default_model, "plugin", images)
    with torch.inference_mode():
        ref = official_forward(default_model, images)
    for name in SMPLOutput._fields:
        a = getattr(out, name)
        assert a.dtype == torch.float32 and a.shape == ref[name].shape, name
        err = (a - ref[name]).abs().max().item()
        assert err < 1e-5, f"{name} differs from the official forward by {err:.3g}"  # float32 rounding
