"""Fidelity: per-output statistics, units, the table and the JSON writer."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from smpler_deploy.errors import SmplerError
from smpler_deploy.fidelity import fidelity, format_fidelity_table, geodesic_deg, write_fidelity_json
from smpler_deploy.outputs import SMPLOutput


def outputs(b=2, seed=0):
    rng = np.random.default_rng(seed)
    return SMPLOutput(rng.normal(size=(b, 6890, 3)).astype(np.float32), rng.normal(size=(b, 14, 3)),
                      rng.normal(size=(b, 24, 3)), rng.uniform(-1, 1, (b, 24, 2)),
                      Rotation.random(b * 24, random_state=seed).as_matrix().reshape(b, 24, 3, 3),
                      rng.normal(size=(b, 10)), rng.normal(size=(b, 3)))


def test_identical_is_zero():
    a = outputs()
    d = fidelity(a, a)
    assert d["finite"] and d["batch"] == 2
    assert d["vertices"]["max_mm"] == 0 and d["rotmat"]["max_deg"] == pytest.approx(0, abs=1e-6)
    assert d["joints"]["pa_mean_mm"] == pytest.approx(0, abs=1e-6)


def test_known_offsets_in_units():
    a = outputs()
    r = Rotation.from_euler("x", 2.0, degrees=True).as_matrix()
    b = a._replace(vertices=a.vertices + np.float32(0.001), joints=a.joints + [0.0, 0.0, 0.002],
                   rotmat=a.rotmat @ r, betas=a.betas + 0.01, smpl_joints2d=a.smpl_joints2d + 0.01)
    d = fidelity(a, b)
    assert d["vertices"]["mean_mm"] == pytest.approx(np.sqrt(3), rel=1e-3)
    assert d["joints"]["max_mm"] == pytest.approx(2.0) and d["joints"]["pa_mean_mm"] == pytest.approx(0, abs=1e-6)
    assert d["rotmat"]["mean_deg"] == pytest.approx(2.0) and d["rotmat"]["max_deg"] == pytest.approx(2.0)
    assert d["betas"]["max_abs"] == pytest.approx(0.01) and d["cam"]["max_abs"] == 0
    assert d["smpl_joints2d"]["max_px"] == pytest.approx(1.12)  # 0.01 normalized × 112 px


def test_geodesic_near_zero_and_pi():
    for deg in (1e-4, 90.0, 179.999):
        r = Rotation.from_rotvec([0, 0, np.radians(deg)]).as_matrix()
        assert geodesic_deg(np.eye(3), r) == pytest.approx(deg, rel=1e-5)


def test_nonfinite_and_shape_errors(tmp_path):
    a = outputs()
    v = a.vertices.copy()
    v[0, 0, 0] = np.nan
    d = fidelity(a, a._replace(vertices=v))
    assert not d["finite"] and np.isnan(d["vertices"]["max_mm"])
    assert "NON-FINITE" in format_fidelity_table(d)
    p = write_fidelity_json(d, tmp_path / "f.json")
    assert json.loads(p.read_text())["vertices"]["max_mm"] is None  # strict JSON: NaN -> null
    with pytest.raises(SmplerError, match="vertices"):
        fidelity(a, a._replace(vertices=a.vertices[:, :100]))


def test_table_format():
    t = format_fidelity_table(fidelity(outputs(), outputs(seed=1)), "onnx fp16")
    lines = t.splitlines()
    assert lines[0].startswith("onnx fp16 (batch 2)") and len(lines) == 17
    assert len({len(line) for line in lines[2:]}) == 1  # aligned columns


# ---------------------------------------------------------------- the fidelity gate (--max-error-mm)

def test_parse_max_error_and_limits():
    from smpler_deploy.fidelity import INT8_LIMITS_MM, gate_limits, parse_max_error

    assert parse_max_error("5,25") == (5.0, 25.0) and parse_max_error(" off ") is None
    assert parse_max_error("none") is None
    for bad in ("5", "5,25,1", "a,b", "30,5", "0,5", "nan,5", "5,inf"):
        with pytest.raises(SmplerError, match="max_error_mm") as e:
            parse_max_error(bad)
        assert "\n" not in str(e.value)
    assert gate_limits(None, "int8") == INT8_LIMITS_MM and gate_limits(None, "int8-cpu") == INT8_LIMITS_MM
    assert gate_limits(None, "fp32") is None and gate_limits(None, "fp16") is None  # none unless given
    assert gate_limits("1,2", "fp16") == (1.0, 2.0) and gate_limits("off", "int8") is None


def test_check_gate_measured_vs_limit():
    from smpler_deploy.fidelity import check_gate

    a = outputs()
    b = a._replace(vertices=a.vertices + np.float32(0.001))  # every vertex sqrt(3) mm off
    d = fidelity(a, b)
    assert check_gate(d, None) is None and check_gate(d, (2.0, 2.0)) is None
    msg = check_gate(d, (1.0, 5.0))
    assert msg and "1.73" in msg and "1 / 5 mm" in msg and "\n" not in msg  # measured vs limit
    assert check_gate(d, (5.0, 1.5))  # the max limit alone trips it too
    v = b.vertices.copy()
    v[1, 3, 0] = np.inf
    assert "non-finite" in check_gate(fidelity(a, b._replace(vertices=v)), (100.0, 100.0))


def test_calibration_warning_below_100_images():
    from smpler_deploy.fidelity import calibration_warning

    assert calibration_warning(100) is None and calibration_warning(512) is None
    w = calibration_warning(16, builtin=True)
    assert "built-in" in w and "16" in w and "--calib" in w and "--save-crops" in w and "\n" not in w
    assert "99 images" in calibration_warning(99)
