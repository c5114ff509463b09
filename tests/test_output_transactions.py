"""Outputs as transactions, through the real commands: smpler-run writes its whole -o (and --save-crops) at the end
or not at all; smpler-aot, smpler-demo, smpler-bench and --format triton check before any work, refuse to replace
without --force, and turn a full disk (a small tmpfs) or a read-only file system (a read-only bind mount; tests run
as root, so permission bits would not stop them) into one line naming the path, leaving no lock, stage or folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smpler_deploy.errors import SmplerError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- helpers


def _mount(args: list[str], where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *args, str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} not permitted here: {r.stderr.strip()}")
    return where


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 256 KiB: room for a folder and a few small files, not for overlays or kernels."""
    d = _mount(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], tmp_path / "disk")
    yield d
    subprocess.run(["umount", str(d)], check=True)


@pytest.fixture
def read_only(tmp_path):
    src = tmp_path / "ro-src"
    src.mkdir()
    d = _mount(["--bind", "-o", "ro", str(src)], tmp_path / "ro")
    yield d
    subprocess.run(["umount", str(d)], check=True)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _photos(d: Path, n: int) -> Path:
    from PIL import Image
    from skimage import data

    d.mkdir()
    astro = data.astronaut()
    for i in range(n):
        Image.fromarray(np.roll(astro, 8 * i, axis=1)).save(d / f"p{i}.png")
    return d


def _boxes(path: Path, n: int, box=(84, 20, 279, 492)) -> Path:
    path.write_text(json.dumps([{"frame": i, "bbox": list(box)} for i in range(n)]))
    return path


def _run(argv, capsys):
    from smpler_deploy.cli.run import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _cli(module: str, *argv, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", f"smpler_deploy.cli.{module}", *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kw)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) >= 1 and "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


# ---------------------------------------------------------------------------------------------------- smpler-run


@pytest.fixture(scope="module")
def run_args(onnx_fp32):
    return ["--backend", "onnxruntime", "--onnx", onnx_fp32, "--threads", "1", "--batch", "1"]


def test_two_runs_into_one_out(tmp_path, run_args, capsys):
    """The second run into a non-empty -o is refused (nothing changes); with --force it replaces -o as a whole:
    nothing of the first run (its other overlays) is mixed into the second's output. A folder holding files a
    run does not write is never replaced, --force or not."""
    first, second = _photos(tmp_path / "first", 2), _photos(tmp_path / "second", 1)
    boxes = _boxes(tmp_path / "boxes.json", 2)
    out = tmp_path / "out"
    rc, printed, err = _run([first, "-o", out, "--boxes", boxes, *run_args], capsys)
    assert rc == 0, err
    assert _tree(out) == ["overlays", "overlays/p0.png", "overlays/p1.png", "params.jsonl", "params.npz"]
    before = {p: (out / p).stat().st_mtime_ns for p in _tree(out)}

    rc, _, err = _run([second, "-o", out, "--boxes", boxes, *run_args], capsys)
    assert rc == 2 and err == f"error: -o {out}: exists and is not empty (pass --force to replace it)\n"
    assert {p: (out / p).stat().st_mtime_ns for p in _tree(out)} == before

    rc, _, err = _run([second, "-o", out, "--boxes", boxes, "--force", *run_args], capsys)
    assert rc == 0, err
    assert _tree(out) == ["overlays", "overlays/p0.png", "params.jsonl", "params.npz"]
    assert json.loads((out / "params.jsonl").read_text().splitlines()[0])["meta"]["source"] == str(second)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no lock, stage or backup

    (second / "notes.txt").write_text("mine")  # -o . or a folder holding the input: not a previous output
    rc, _, err = _run([second, "-o", second, "--boxes", boxes, "--force", *run_args], capsys)
    assert rc == 2 and f"-o {second}: holds notes.txt, p0.png, which this command does not write" in err
    assert sorted(p.name for p in second.iterdir()) == ["notes.txt", "p0.png"]


def test_bad_input_is_refused_before_any_output(tmp_path, run_args, capsys):
    """Boxes, session, body model, every image's header and count flags are checked before -o (or --save-crops)
    exists; a decompression bomb is refused before the model is loaded."""
    from test_image_bombs import png_header

    photos = _photos(tmp_path / "photos", 1)
    bomb_dir = tmp_path / "bombs"
    bomb_dir.mkdir()
    png_header(bomb_dir / "bomb.png", 20000, 20000)
    (tmp_path / "bad.json").write_text('[{"frame": 0}]')
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (tmp_path / "file").write_text("x")
    out, crops = tmp_path / "out", tmp_path / "crops"
    cases = [
        ([photos, "--boxes", tmp_path / "bad.json", *run_args], "--boxes"),
        ([photos, "--backend", "onnxruntime", "--onnx", tmp_path / "bad.onnx"], "bad.onnx"),
        ([bomb_dir, "--backend", "onnxruntime", "--onnx", tmp_path / "bad.onnx"], "bomb.png"),  # before the model
        ([photos, "--threads", "0", *run_args[:4]], "--threads 0: expected a positive integer"),
        ([photos, "--save-crops", tmp_path / "file", *run_args], "--save-crops"),
        ([photos, "--save-crops", out, *run_args], "is inside -o"),  # -o is replaced as a whole
    ]
    for argv, named in cases:
        rc, _, err = _run([*argv, "-o", out, "--save-crops", crops] if "--save-crops" not in argv
                          else [*argv, "-o", out], capsys)
        assert rc == 2 and named in _one_error_line(err), (argv, err)
        assert not out.exists() and not crops.exists(), argv
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_mid_run_leaves_nothing(tmp_path, run_args, capsys, monkeypatch):
    """Ctrl-C (KeyboardInterrupt in the main thread, where the session runs) after two of five frames: the
    overlays and crops already made are not kept, and "nothing written" is true."""
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    photos = _photos(tmp_path / "photos", 5)
    boxes = _boxes(tmp_path / "boxes.json", 5)
    calls, infer = [], OnnxRuntimeSession.infer

    def interrupted_at_third_call(self, x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return infer(self, x)

    monkeypatch.setattr(OnnxRuntimeSession, "infer", interrupted_at_third_call)
    rc, _, err = _run([photos, "-o", tmp_path / "out", "--boxes", boxes, "--save-crops", tmp_path / "crops",
                       "--queue", "1", *run_args], capsys)
    assert rc == 130 and err == "error: interrupted: nothing written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "photos"]


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk, run_args, capsys):
    photos = _photos(tmp_path / "photos", 2)
    rc, _, err = _run([photos, "-o", small_disk / "out", "--boxes", _boxes(tmp_path / "b.json", 2), *run_args],
                      capsys)
    line = _one_error_line(err)
    assert rc == 1 and line.startswith(f"error: {small_disk / 'out'}") and "No space left on device" in line
    assert _tree(small_disk) == []  # no -o, no stage, no lock


def test_read_only_and_wrong_kind_destinations(tmp_path, read_only, run_args, capsys):
    photos = _photos(tmp_path / "photos", 1)
    (tmp_path / "file").write_text("x")
    for argv, line in (
            (["-o", read_only / "sub"], f"error: -o {read_only / 'sub'}: directory {read_only} is not writable"),
            (["-o", tmp_path / "out", "--save-crops", read_only / "c"],
             f"error: --save-crops {read_only / 'c'}: directory {read_only} is not writable"),
            (["-o", tmp_path / "out", "--save-crops", tmp_path / "file"],
             f"error: --save-crops {tmp_path / 'file'}: exists and is not a directory")):
        rc, _, err = _run([photos, *argv, *run_args], capsys)
        assert rc == 2 and err == line + "\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("ro", "ro-src")) == ["file", "photos"]


def test_boxes_outside_the_frame_are_reported(tmp_path, run_args, capsys):
    photos = _photos(tmp_path / "photos", 1)
    boxes = _boxes(tmp_path / "boxes.json", 1, box=(2000, 20, 279, 492))  # right of a 512 px wide frame
    rc, printed, err = _run([photos, "-o", tmp_path / "out", "--boxes", boxes, "--no-overlay", *run_args], capsys)
    assert rc == 0, err
    assert "warning: frame 0 (p0.png): 1 box(es) outside the 512x512 frame" in printed


def test_video_kept_only_when_the_container_closes(small_disk):
    """A full disk usually fails only when FFmpeg flushes the container at close: no overlay.mp4 then."""
    from smpler_deploy.pipeline.video import VideoWriter

    with open(small_disk / "fill", "wb") as f:  # leave ~8 KiB: the frames fit FFmpeg's buffer, the flush does not
        f.write(b"\0" * (248 * 1024))
    w = VideoWriter(small_disk / "overlay.mp4", 10, codec="mpeg4")
    rng = np.random.default_rng(0)
    for _ in range(3):
        w.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(OSError):
        w.close()
    assert _tree(small_disk) == ["fill"]


# ---------------------------------------------------------------------------------------------------- smpler-aot

AOT_ONE = ["--sm", "89", "--kernel", "local_attention", "--dtype", "fp32"]


def test_aot_read_only_full_disk_and_ctrl_c(tmp_path, read_only, small_disk):
    r = _cli("aot", *AOT_ONE, "-o", read_only / "k")
    assert r.returncode == 2 and _one_error_line(r.stderr) == f"error: -o {read_only / 'k'}: directory {read_only} " \
                                                               "is not writable"
    r = _cli("aot", *AOT_ONE, "-o", read_only / "a" / "k")  # nested: the parent is not made
    assert r.returncode == 2 and f"-o {read_only / 'a' / 'k'}: directory {read_only / 'a'} does not exist" in r.stderr

    r = _cli("aot", *AOT_ONE, "-o", small_disk / "k")  # cubin (~190 KB) fits, its PTX does not
    line = _one_error_line(r.stderr)
    assert r.returncode == 1 and line.startswith(f"error: {small_disk / 'k'}/") and "No space left" in line
    assert _tree(small_disk) == []
    _fill(small_disk / "fill")  # no room at all: not even for the pid in a lock file
    r = _cli("aot", *AOT_ONE, "-o", small_disk / "k")
    line = _one_error_line(r.stderr)
    assert r.returncode == 1 and line.startswith(f"error: {small_disk / 'k'}/") and "No space left" in line
    assert _tree(small_disk) == ["fill"]

    # Ctrl-C once the first of two variants is compiled: no kernel folder is left half-written
    proc = subprocess.Popen([sys.executable, "-m", "smpler_deploy.cli.aot", "--sm", "89", "--kernel",
                             "local_attention", "-o", str(tmp_path / "k")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = proc.stdout.readline()
    assert "local_attention_" in first and ".cubin" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in _one_error_line(err)
    assert not (tmp_path / "k").exists()


# ---------------------------------------------------------------------------------------------------- demo, bench


def test_demo_and_bench_refuse_existing_outputs_without_force(tmp_path, onnx_fp32, capsys):
    from PIL import Image
    from skimage import data

    from smpler_deploy.cli.bench import main as bench
    from smpler_deploy.cli.demo import main as demo

    img = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).save(img)
    png = tmp_path / "o.png"
    png.write_bytes(b"old")
    args = [str(img), "--backend", "onnxruntime", "--onnx", str(onnx_fp32), "--threads", "1", "--out", str(png)]
    assert demo(args) == 2
    assert capsys.readouterr().err == f"error: --out {png}: file exists (pass --force to overwrite)\n"
    assert png.read_bytes() == b"old" and not png.with_suffix(".obj").exists()
    assert demo([*args, "--force"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.with_suffix(".ply").exists()

    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.json").write_text("{}")
    assert bench(["--backends", "onnxruntime", "--onnx", f"fp32={onnx_fp32}", "--iters", "1", "--warmup", "0",
                  "--out", str(rep)]) == 2
    assert capsys.readouterr().err == f"error: --out {rep / 'report.json'}: file exists (pass --force to overwrite)\n"
    assert _tree(rep) == ["report.json"]


def test_demo_full_disk_keeps_none_of_png_obj_ply(tmp_path, small_disk, onnx_fp32, capsys):
    from PIL import Image
    from skimage import data

    from smpler_deploy.cli.demo import main as demo

    img = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).save(img)
    assert demo([str(img), "--backend", "onnxruntime", "--onnx", str(onnx_fp32), "--threads", "1", "--out",
                 str(small_disk / "o.png")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {small_disk}/o.") and line.endswith("No space left on device")
    assert _tree(small_disk) == []  # no PNG, OBJ, PLY, lock or temp file


def test_export_and_bench_full_disk_are_one_line_and_leave_nothing(onnx_fp32, small_disk):
    """smpler-export: the graph does not fit (it fails while writing, after the export); smpler-bench: no room at
    all, not even for its lock. One line naming the path, exit 1, nothing left behind."""
    r = _cli("export", "-o", small_disk / "m.onnx")
    line = _one_error_line(r.stderr)
    assert r.returncode == 1 and line.startswith(f"error: {small_disk}/") and line.endswith("No space left on device")
    assert _tree(small_disk) == []

    _fill(small_disk / "fill")
    r = _cli("bench", "--backends", "onnxruntime", "--onnx", f"fp32={onnx_fp32}", "--iters", "1", "--warmup", "0",
             "--no-progress", "--out", small_disk / "rep")
    line = _one_error_line(r.stderr)
    assert r.returncode == 1 and line.startswith(f"error: {small_disk}/") and "No space left" in line
    assert _tree(small_disk) == ["fill"]


def test_bench_refuses_a_bad_checkpoint_before_the_baselines(tmp_path, capsys):
    from smpler_deploy.cli.bench import main as bench

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02not a checkpoint")
    assert bench(["--backends", "torch", "--iters", "1", "--warmup", "0", "--checkpoint", str(bad),
                  "--no-progress", "--out", str(tmp_path / "rep")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: --checkpoint {bad}: not a loadable weights-only checkpoint") and out == ""
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------------------------------------------- triton


def test_triton_destination_checked_before_the_export(tmp_path, read_only):
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a model repository")
    for out, force, says in ((tmp_path / "missing" / "repo", [], "does not exist"),
                             (tmp_path / "mine", ["--force"], "holds notes.txt, which this command does not write"),
                             (read_only / "repo", [], "is not writable"),
                             (tmp_path / "file", [], "exists and is not a directory"),
                             (tmp_path / "file", ["--force"], "exists and is not a directory")):
        r = _cli("export", "--format", "triton", "-o", out, *force)
        line = _one_error_line(r.stderr)
        assert r.returncode == 2 and says in line and "--force" not in line, r.stderr
        assert "loading model" not in r.stderr  # nothing exported first
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_triton_full_disk_leaves_nothing(onnx_fp32, small_disk):
    r = _cli("export", "--format", "triton", "--onnx", onnx_fp32, "-o", small_disk / "repo")
    line = _one_error_line(r.stderr)
    assert r.returncode == 1 and f"{small_disk / 'repo'}/" in line and line.endswith("No space left on device")
    assert _tree(small_disk) == []


# ---------------------------------------------------------------------------------------------------- sessions


def test_infer_refuses_empty_and_raw_pixel_batches_and_a_closed_session(onnx_fp32, default_model):
    from smpler_deploy.runtime import open_session
    from smpler_deploy.runtime.torch_session import TorchSession

    for sess in (open_session("onnxruntime", path=onnx_fp32, threads=1), TorchSession(default_model)):
        with pytest.raises(SmplerError, match=r"^images: empty batch \[0,3,224,224\]; expected at least one image$"):
            sess.infer(np.zeros((0, 3, 224, 224), np.float32))
        with pytest.raises(SmplerError, match=r"^images: expected float32 values .* got uint8$"):
            sess.infer(np.zeros((1, 3, 224, 224), np.uint8))
        sess.close()
        with pytest.raises(SmplerError, match="session is closed"):
            sess.infer(np.zeros((1, 3, 224, 224), np.float32))


def test_valid_engine_without_a_driver_is_not_called_corrupt():
    """A real TensorRT-RTX plan on this machine (no usable CUDA driver): the reason is the driver, not the file."""
    pytest.importorskip("tensorrt_rtx")
    import onnx
    from onnx import TensorProto, helper

    from smpler_deploy.runtime.tensorrt import TrtCudaApi, TrtExecutor
    from trt_standin import build_plan

    api = TrtCudaApi("tensorrt-rtx")
    try:
        api.device_sm()
        pytest.skip("a CUDA device is usable here")
    except SmplerError:
        pass
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    plan = build_plan(model, {"x": ((1, 4), (1, 4), (1, 4))})
    with pytest.raises(SmplerError) as e:
        TrtExecutor(api, plan, "relu.engine", flavour="tensorrt-rtx")
    assert "no usable CUDA device" in str(e.value) and "corrupt" not in str(e.value)
