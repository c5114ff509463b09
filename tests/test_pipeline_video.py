"""smpler-run end to end: PyAV sources and writer round trips, bad input (unreadable video, missing camera) as
one-line errors, frames without people, cross-frame batching, and the CLI over a synthetic video of a real photo
with the onnxruntime backend."""

from __future__ import annotations

import json
import os
import threading
from fractions import Fraction

import numpy as np
import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.pipeline.video import Frame, Source, VideoWriter, open_source


def _write_mp4(path, frames, fps=10):
    """Reference writer: PyAV directly (not the code under test)."""
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.bit_rate = 20_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def _read_mp4(path):
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(st)], float(st.average_rate), st.codec_context.name


def _flat_frames(n=6, h=96, w=128):
    return [np.full((h, w, 3), (20 * i, 100, 255 - 20 * i), np.uint8) for i in range(n)]


def test_video_file_source_reads_every_frame(tmp_path):
    frames = _flat_frames()
    src = open_source(str(_write_mp4(tmp_path / "in.mp4", frames)))
    assert src.kind == "video" and src.fps == pytest.approx(10)
    got = list(src)
    src.close()
    assert [f.index for f in got] == list(range(6)) and got[0].image.shape == (96, 128, 3)
    for g, f in zip(got, frames):
        assert np.abs(g.image.astype(int) - f).mean() < 6  # lossy codec, flat colours
    assert got[3].time_s == pytest.approx(0.3)
    assert len(list(open_source(str(tmp_path / "in.mp4"), max_frames=2))) == 2


def test_video_writer_round_trip_pads_odd_sizes(tmp_path):
    frames = [np.full((75, 101, 3), (10 * i, 200, 40), np.uint8) for i in range(5)]
    w = VideoWriter(tmp_path / "o.mp4", fps=12)
    for f in frames:
        w.write(f)
    assert w.close() == tmp_path / "o.mp4"
    got, fps, codec = _read_mp4(tmp_path / "o.mp4")
    assert len(got) == 5 and got[0].shape == (76, 102, 3) and fps == pytest.approx(12)
    assert codec in ("h264", "mpeg4")
    assert np.abs(got[4][:75, :101].astype(int) - frames[4]).mean() < 6
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]  # no temporary left behind


def test_aborted_video_leaves_nothing(tmp_path):
    w = VideoWriter(tmp_path / "o.mp4", fps=10)
    w.write(np.zeros((32, 32, 3), np.uint8))
    assert w.close(ok=False) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, b""])
def test_unreadable_video_is_one_line_error(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(SmplerError) as e:
        list(open_source(str(bad)))
    assert "\n" not in str(e.value) and "broken.mp4" in str(e.value) and "video" in str(e.value)


@pytest.mark.parametrize("spec", ["/dev/video97", "97", "cam:97"])
def test_missing_camera_is_one_line_error(spec):
    with pytest.raises(SmplerError, match=r"camera not found.*/dev/video97"):
        open_source(spec)


def test_missing_inputs(tmp_path):
    with pytest.raises(SmplerError, match="no such file or folder"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmplerError, match="folder has no images"):
        open_source(str(tmp_path / "empty"))


def test_cli_missing_camera_exit_code(tmp_path, capsys):
    from smpler_deploy.cli.run import main

    assert main(["/dev/video97", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: /dev/video97: camera not found") and "\n" not in err


# ------------------------------------------------------------------------------------------------------------------
# The loop: batching, frames without people
# ------------------------------------------------------------------------------------------------------------------

class CountingSession:
    """A real session, counting calls and batch sizes."""

    def __init__(self, sess):
        self.sess, self.batches = sess, []

    def infer(self, x):
        self.batches.append(len(x))
        return self.sess.infer(x)

    def close(self):
        pass


class ListSource(Source):
    kind, fps = "video", 10.0

    def __init__(self, images):
        self.images = images

    def __iter__(self):
        for i, im in enumerate(self.images):
            yield Frame(i, im, f"frame_{i:06d}", i / 10)


@pytest.fixture(scope="module")
def session(onnx_fp32):
    """ONNX Runtime on the default model's fp32 graph (the fastest real backend here)."""
    from smpler_deploy.runtime import open_session

    return open_session("onnxruntime", path=onnx_fp32, threads=2)


@pytest.fixture(scope="module")
def faces():
    from smpler_deploy.body.standin import make_standin_body_model

    return make_standin_body_model(0).faces


def test_cross_frame_batching_matches_single_crops(session):
    from smpler_deploy.pipeline.crops import infer_batched, person_crops
    from skimage import data

    img = data.astronaut()
    c2, _, _ = person_crops(img, [[84, 20, 279, 492], [300, 0, 200, 300]])
    c1, _, _ = person_crops(img, [[150, 60, 200, 400]])
    empty = c1[:0]
    counting = CountingSession(session)
    outs = infer_batched(counting, [c2, empty, c1], max_batch=2)
    assert counting.batches == [2, 1] and outs[1] is None
    single = [session.infer(c[None]) for c in (c2[0], c2[1], c1[0])]
    got = [(outs[0], 0), (outs[0], 1), (outs[2], 0)]
    for (o, i), s in zip(got, single):
        assert np.allclose(o.vertices[i], s.vertices[0], atol=1e-5)
        assert np.allclose(o.cam[i], s.cam[0], atol=1e-5)


def test_frame_without_people_gives_no_mesh(session, faces):
    from smpler_deploy.pipeline.detect import OpenCVDetector
    from smpler_deploy.pipeline.runner import RunConfig, run
    from skimage import data

    astro = data.astronaut()
    blank = np.full_like(astro, 90)
    frames = []
    counting = CountingSession(session)
    people, times = run(ListSource([blank, astro, blank]), OpenCVDetector(), counting,
                        faces=faces, config=RunConfig(max_batch=4),
                        on_frame=lambda f, ov, pp: frames.append((f.index, ov, len(pp))), log=lambda *a: None)
    assert [(i, n) for i, _, n in frames] == [(0, 0), (1, 1), (2, 0)]
    assert sum(counting.batches) == 1  # only the frame with a person reached the model
    assert np.array_equal(frames[0][1], blank) and not np.array_equal(frames[1][1], astro)
    assert [p.frame for p in people] == [1] and people[0].track_id == 1
    assert times.frames == 3 and times.people == 1


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priorities are a Linux feature")
def test_helper_threads_yield_to_inference(session, faces):
    """Decode, prepare and output threads run at a lower priority than the thread that calls the session."""
    from smpler_deploy.pipeline.detect import Detections
    from smpler_deploy.pipeline.runner import RunConfig, run

    seen = {}

    class Src(ListSource):
        def __iter__(self):
            seen["decode"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            yield from super().__iter__()

    def detector(image, index):
        seen["prepare"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return Detections(np.zeros((0, 4)), np.zeros(0), None)

    def on_frame(f, ov, pp):
        seen["output"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    run(Src([np.zeros((64, 64, 3), np.uint8)]), detector, CountingSession(session), faces=faces,
        config=RunConfig(max_batch=4), on_frame=on_frame, log=lambda *a: None)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the caller's stays
    want = min(19, main_nice + 10)
    assert seen == {"decode": want, "prepare": want, "output": want}


# ------------------------------------------------------------------------------------------------------------------
# The command line over a synthetic video made from a real photo
# ------------------------------------------------------------------------------------------------------------------

def test_cli_video_end_to_end_onnxruntime(tmp_path, onnx_fp32, capsys):
    from skimage import data

    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline.params import read_params

    astro = data.astronaut()
    frames = [np.roll(astro, 4 * i, axis=1) for i in range(2)] + [np.full_like(astro, 90)] + [np.roll(astro, 12, 1)]
    video = _write_mp4(tmp_path / "people.mp4", frames, fps=5)
    out = tmp_path / "run"
    rc = main([str(video), "-o", str(out), "--backend", "onnxruntime", "--onnx", str(onnx_fp32), "--threads", "2",
               "--smooth", "one-euro"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "frames/s" in printed and "infer" in printed and "untrained weights" in printed
    arrays, meta = read_params(out / "params.npz")
    assert arrays["frame"].tolist() == [0, 1, 3]  # the blank frame has no person
    assert len(set(arrays["track_id"].tolist())) == 1 and arrays["track_id"][0] >= 1
    assert arrays["body_pose"].shape == (3, 69) and arrays["body_pose_rotmat"].shape == (3, 23, 3, 3)
    assert arrays["global_orient"].shape == (3, 3) and arrays["betas"].shape == (3, 10)
    assert np.all(arrays["transl"][:, 2] > 0)
    assert meta["untrained"] is True and meta["summary"]["frames"] == 4 and meta["smoothing"] == "one-euro"
    lines = (out / "params.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "meta" in json.loads(lines[0])
    rec = json.loads(lines[1])
    assert len(rec["body_pose"]) == 69 and np.asarray(rec["body_pose_rotmat"]).shape == (23, 3, 3)
    got, fps, _ = _read_mp4(out / "overlay.mp4")
    assert len(got) == 4 and fps == pytest.approx(5) and got[0].shape == astro.shape
    # rerun refuses to overwrite without --force
    assert main([str(video), "-o", str(out), "--backend", "onnxruntime", "--onnx", str(onnx_fp32)]) == 2
    assert "--force" in capsys.readouterr().err


def test_writer_error_stops_the_run_without_hanging(session, faces):
    from smpler_deploy.pipeline.detect import OpenCVDetector
    from smpler_deploy.pipeline.runner import run
    from skimage import data

    def full_disk(frame, overlay, people):
        raise SmplerError("overlay.mp4: no space left on device")

    with pytest.raises(SmplerError, match="no space left"):
        run(ListSource([data.astronaut()] * 3), OpenCVDetector(), session, faces=faces, on_frame=full_disk,
            log=lambda *a: None)


def test_saved_crops_are_the_model_inputs_and_calibration_reads_them_unchanged(tmp_path, onnx_fp32):
    """--save-crops writes what the model saw; int8 calibration (`--calib DIR`) reads exactly those inputs."""
    from PIL import Image
    from skimage import data

    from smpler_deploy.cli.run import main
    from smpler_deploy.export.int8 import load_calibration_dir
    from smpler_deploy.pipeline.params import read_params
    from smpler_deploy.runtime import open_session

    (tmp_path / "photos").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "photos" / "astronaut.png")
    assert main([str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--backend", "onnxruntime", "--onnx",
                 str(onnx_fp32), "--no-overlay", "--save-crops", str(tmp_path / "crops"), "--threads", "1"]) == 0
    assert [p.name for p in (tmp_path / "crops").iterdir()] == ["astronaut_p0.png"]
    assert not (tmp_path / "out" / "overlays").exists()
    x = load_calibration_dir(tmp_path / "crops")
    arrays, _ = read_params(tmp_path / "out" / "params.npz")
    sess = open_session("onnxruntime", path=onnx_fp32, threads=1)
    assert np.allclose(sess.infer(x).cam, arrays["cam"], atol=1e-5)
    assert np.allclose(sess.infer(x).betas, arrays["betas"], atol=1e-5)


def test_ctrl_c_ends_a_camera_run_with_what_was_captured(session, faces, tmp_path):
    """A camera has no end: Ctrl-C (in the main thread) stops capture; frames already inferred are kept."""
    from smpler_deploy.pipeline.detect import BoxFileDetector
    from smpler_deploy.pipeline.runner import RunConfig, run
    from skimage import data

    class Camera(ListSource):
        kind = "camera"

    class Interrupting(CountingSession):
        def infer(self, x):
            if len(self.batches) == 2:
                raise KeyboardInterrupt
            return super().infer(x)

    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"frame": i, "bbox": [84, 20, 279, 492]} for i in range(6)]))
    boxes = BoxFileDetector(path)
    written, logged = [], []
    people, times = run(Camera([data.astronaut()] * 6), boxes, Interrupting(session), faces=faces,
                        config=RunConfig(max_batch=1, queue_size=1), log=logged.append,
                        on_frame=lambda f, ov, pp: written.append(f.index))
    assert written == [0, 1] and [p.frame for p in people] == [0, 1] and "Ctrl-C" in logged[0]
    with pytest.raises(KeyboardInterrupt):  # a file is not a camera: Ctrl-C aborts (the CLI keeps nothing)
        run(ListSource([data.astronaut()] * 3), boxes, Interrupting(session), faces=faces,
            config=RunConfig(max_batch=1), log=lambda *a: None)
