"""smpler-export's command line, in process: bad input fails with one `error:` line and leaves no files behind.

One real export (fp32, fidelity on) checks the written graph, the printed fidelity table and the fidelity JSON.
"""

from __future__ import annotations

import json
import os

import pytest

from smpler_deploy.cli.export import main


def listing(d) -> list[str]:
    return sorted(os.listdir(d))


def run_fail(capsys, d, argv, *names):
    """main(argv) must fail: non-zero, one `error:` line naming each of `names`, directory `d` unchanged."""
    before = listing(d)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and rc == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for n in names:
        assert str(n) in errors[0], errors[0]
    assert listing(d) == before, "partial files left behind"
    return errors[0]


def test_calib_dir_missing(tmp_path, capsys):
    missing = tmp_path / "no_such_dir"
    run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(missing), "-o", str(tmp_path / "m.onnx")],
             "--calib", missing)


def test_calib_not_a_directory(tmp_path, capsys):
    f = tmp_path / "crops.txt"
    f.write_text("not a directory\n")
    line = run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(f), "-o", str(tmp_path / "m.onnx")],
                    "--calib", f)
    assert "not a directory" in line


def test_calib_dir_without_usable_images(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "readme.txt").write_text("no images here\n")
    (calib / "broken.jpg").write_bytes(b"this is not a jpeg")
    (calib / "empty.png").write_bytes(b"")
    out = tmp_path / "m.onnx"
    before_calib = listing(calib)
    line = run_fail(capsys, tmp_path, ["--precision", "int8", "--calib", str(calib), "-o", str(out)],
                    "--calib", calib)
    assert "no usable images" in line
    assert listing(calib) == before_calib


def test_unknown_precision_is_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--precision", "int4", "-o", str(tmp_path / "m.onnx")])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--precision" in errors[0] and "int4" in errors[0], err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("spec,why", [("1:x:8", "positive integers"), ("1:2", "positive integers"),
                                      ("0:1:8", "positive integers"), ("8:4:1", "MIN <= OPT <= MAX"),
                                      ("4:8:2", "MIN <= OPT <= MAX")])
def test_bad_batch_spec(tmp_path, capsys, spec, why):
    line = run_fail(capsys, tmp_path, ["--batch", spec, "-o", str(tmp_path / "m.onnx")], "--batch", spec)
    assert why in line


def test_output_in_missing_directory(tmp_path, capsys):
    out = tmp_path / "missing" / "m.onnx"
    line = run_fail(capsys, tmp_path, ["-o", str(out)], "-o", out)
    assert "does not exist" in line
    assert not (tmp_path / "missing").exists()


def test_existing_output_without_force_is_untouched(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    mtime = out.stat().st_mtime_ns
    line = run_fail(capsys, tmp_path, ["-o", str(out)], "-o", out, "--force")
    assert "exists" in line
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == mtime


def test_cli_fp32_export_with_fidelity(tmp_path, capsys):
    """The one real CLI export: graph + fidelity table on stdout + fidelity JSON beside it, nothing else."""
    import onnx

    out = tmp_path / "smpler.onnx"
    rc = main(["--precision", "fp32", "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "error:" not in cap.err
    assert f"wrote {out}" in cap.out
    assert "fidelity of smpler.onnx vs PyTorch fp32" in cap.out and "vertices max (mm)" in cap.out
    fjson = tmp_path / "smpler.onnx.fidelity.json"
    assert str(fjson) in cap.out
    assert listing(tmp_path) == ["smpler.onnx", "smpler.onnx.fidelity.json"]  # no temp files left
    fid = json.loads(fjson.read_text())
    assert fid["finite"] and fid["batch"] == 4 and fid["vertices"]["max_mm"] < 0.01
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["precision"] == "fp32" and meta["variant"] == "smpler"
