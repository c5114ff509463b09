"""smpler-run at engine speed: a live source that produces frames faster than the model consumes them keeps only
the newest (bounded latency, drops counted), a file keeps every frame, `--realtime` paces a video file at its frame
rate, and `--detect-every N` runs the detector on every N-th frame with the tracker carrying the boxes between.
Real ONNX Runtime session, real PyAV decoder, real tracker."""

from __future__ import annotations

import json
import time
from fractions import Fraction

import numpy as np
import pytest

from smpler_deploy.pipeline.detect import BoxFileDetector, iou
from smpler_deploy.pipeline.runner import RunConfig, run
from smpler_deploy.pipeline.video import Frame, Source, open_source

BOX = [84, 20, 279, 492]  # the astronaut in scikit-image's photo


@pytest.fixture(scope="module")
def session(onnx_fp32):
    from smpler_deploy.runtime import open_session

    return open_session("onnxruntime", path=onnx_fp32, threads=2)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


class Generator(Source):
    """Frames every `period` seconds, far faster than the model (~0.1 s per crop here)."""

    kind, fps = "camera", 200.0

    def __init__(self, image, n: int, period: float = 0.005, live: bool = True):
        self.image, self.n, self.period, self.live = image, n, period, live

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.period)
            yield Frame(i, self.image, f"frame_{i:06d}", i * self.period)


def _boxes(tmp_path, n, boxes=None):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"frame": i, "bbox": boxes[i] if boxes else BOX} for i in range(n)]))
    return BoxFileDetector(path)


def test_live_source_keeps_the_newest_frame_and_bounds_latency(session, astronaut, tmp_path):
    n = 40
    done = []
    people, times = run(Generator(astronaut, n), _boxes(tmp_path, n), session,
                        config=RunConfig(max_batch=8, overlay=False), log=lambda *a: None,
                        on_frame=lambda f, ov, pp: done.append(f.index))
    s = times.summary()
    assert s["live"] and s["frames_captured"] == n and s["frames_dropped"] > n // 2
    assert s["frames"] + s["frames_dropped"] == n and done == sorted(done) and done[-1] == n - 1  # newest kept
    per_frame = times.seconds["infer"] / max(times.frames, 1)
    # a queue would make the last frame wait for every frame before it (~n x per_frame); dropping keeps the wait
    # to the few frames in flight
    assert s["latency_ms"]["p99"] < 1000 * 6 * per_frame < 1000 * n * per_frame / 5
    assert "frames dropped" in times.table() and "p99" in times.table()


def test_a_file_is_never_dropped(session, astronaut, tmp_path):
    n = 6
    _, times = run(Generator(astronaut, n, live=False), _boxes(tmp_path, n), session,
                   config=RunConfig(max_batch=8, overlay=False), log=lambda *a: None)
    s = times.summary()
    assert not s["live"] and s["frames"] == s["frames_captured"] == n and s["frames_dropped"] == 0
    assert s["latency_ms"]["p50"] > 0


def _write_mp4(path, frames, fps):
    import av

    with av.open(str(path), mode="w") as c:
        st = c.add_stream("mpeg4", rate=Fraction(fps))
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


def test_realtime_paces_a_video_file_at_its_frame_rate(tmp_path):
    frames = [np.full((64, 96, 3), 40 * i, np.uint8) for i in range(6)]
    video = _write_mp4(tmp_path / "clip.mp4", frames, fps=10)
    fast = open_source(str(video))
    t = time.perf_counter()
    assert len(list(fast)) == 6 and not fast.live
    fast_s = time.perf_counter() - t
    paced = open_source(str(video), realtime=True)
    t = time.perf_counter()
    got = list(paced)
    assert paced.live and len(got) == 6 and time.perf_counter() - t >= 0.45 > fast_s  # 5 frame intervals at 10 fps
    fast.close(), paced.close()


def test_detect_every_n_frames_carries_boxes_by_the_tracker(session, astronaut, tmp_path):
    """The detector sees frames 0, 3, 6; between them the tracker's predicted boxes are cropped, under the same
    track id, and stay on the (moving) person."""
    n, speed = 8, 6
    truth = [[BOX[0] + speed * i, BOX[1], BOX[2], BOX[3]] for i in range(n)]
    frames = [np.roll(astronaut, speed * i, axis=1) for i in range(n)]

    class Moving(Source):
        kind, fps = "video", 10.0

        def __iter__(self):
            for i, im in enumerate(frames):
                yield Frame(i, im, f"frame_{i:06d}", i / 10)

    boxes = _boxes(tmp_path, n, truth)

    class Counting:
        label = "boxes"

        def __init__(self):
            self.calls = []

        def __call__(self, image, index):
            self.calls.append(index)
            return boxes(image, index)

    det = Counting()
    people, _ = run(Moving(), det, session, config=RunConfig(max_batch=4, overlay=False, detect_every=3),
                    log=lambda *a: None)
    assert det.calls == [0, 3, 6]
    assert [p.frame for p in people] == list(range(n)) and {p.track_id for p in people} == {1}
    overlap = [float(iou(np.array([p.box]), np.array([truth[p.frame]]))[0, 0]) for p in people]
    assert min(overlap) > 0.85, overlap


@pytest.mark.parametrize("argv, msg", [
    (["--detect-every", "0"], "--detect-every 0: expected a positive integer"),
    (["--detect-every", "2", "--boxes", "b.json"], "--detect-every: applies to a detector"),
    (["--detect-every", "2", "--no-track"], "drop --no-track"),
])
def test_detect_every_flag_errors(tmp_path, capsys, argv, msg, astronaut):
    from PIL import Image

    from smpler_deploy.cli.run import main

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and not (tmp_path / "out").exists()


def test_realtime_needs_a_frame_rate(tmp_path, capsys, astronaut):
    from PIL import Image

    from smpler_deploy.cli.run import main

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    assert main([str(tmp_path), "-o", str(tmp_path / "out"), "--realtime"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--realtime" in err and "no frame rate" in err and "\n" not in err


def test_crops_one_warp_per_person_give_the_model_inputs_of_the_crop_convention(astronaut):
    """Several people's crops from one hand-over of the frame equal the single-crop path, and the table-lookup
    normalization gives exactly the per-pixel arithmetic's float32 numbers."""
    from smpler_deploy.pipeline.crops import person_crops
    from smpler_deploy.preprocess import MEAN, STD, box_transform, crop, crop_person, crops

    boxes = [BOX, [300, 0, 200, 300], [-40, 400, 120, 200]]  # the last runs off the frame (black padding)
    ts = [box_transform(astronaut.shape[:2], b) for b in boxes]
    many = crops(astronaut, ts)
    assert all(np.array_equal(many[k], crop(astronaut, t)) for k, t in enumerate(ts))
    x, _, keep = person_crops(astronaut, boxes)
    ref = np.moveaxis((many.astype(np.float32) / 255.0 - MEAN) / STD, -1, -3)
    assert keep.tolist() == [0, 1, 2] and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, ref) and np.array_equal(crop_person(astronaut, BOX)[0], ref[0])


def _boxes_file(path, n, track=True):
    path.write_text(json.dumps([{"frame": i, "bbox": BOX, **({"track": 1} if track else {})} for i in range(n)]))
    return path


def test_cli_realtime_video_drops_stale_frames_and_reports_latency(tmp_path, onnx_fp32, astronaut, capsys):
    """`smpler-run clip.mp4 --realtime` on a 100 fps file (far faster than the model): the PyAV decoder paces it,
    stale frames are dropped, every processed frame is drawn by the renderer into overlay.mp4, and the summary
    gives latency and drops; the same file without --realtime keeps every frame."""
    import av

    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline.params import read_params

    n = 24
    video = _write_mp4(tmp_path / "fast.mp4", [np.roll(astronaut, 2 * i, axis=1) for i in range(n)], fps=100)
    boxes = _boxes_file(tmp_path / "boxes.json", n)
    common = ["--backend", "onnxruntime", "--onnx", str(onnx_fp32), "--threads", "2", "--boxes", str(boxes)]
    assert main([str(video), "-o", str(tmp_path / "live"), "--realtime", *common]) == 0
    printed = capsys.readouterr().out
    arrays, meta = read_params(tmp_path / "live" / "params.npz")
    s = meta["summary"]
    assert s["live"] and s["frames_captured"] == n and s["frames_dropped"] > 0
    assert s["frames"] + s["frames_dropped"] == n and arrays["frame"].tolist()[-1] == n - 1  # the newest is kept
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] < 1000 * s["wall_s"]  # bounds: test_live_source_...
    assert f"frames dropped: {s['frames_dropped']} of {n} (live source" in printed and "p99" in printed
    with av.open(str(tmp_path / "live" / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == s["frames"]
    assert main([str(video), "-o", str(tmp_path / "file"), "--no-overlay", *common]) == 0
    _, meta = read_params(tmp_path / "file" / "params.npz")
    assert not meta["summary"]["live"] and meta["summary"]["frames"] == n and meta["summary"]["frames_dropped"] == 0


def test_tracker_and_norfair_only_when_tracking_is_used(tmp_path, onnx_fp32, astronaut):
    """A boxes file that carries every frame's track ids needs no tracker: smpler-run does not import norfair
    (about a second of start-up). Without ids the tracker assigns them."""
    import subprocess
    import sys

    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "img" / "a.png")
    tracked, untracked = _boxes_file(tmp_path / "t.json", 1), _boxes_file(tmp_path / "u.json", 1, track=False)
    script = f"""
import sys
from smpler_deploy.cli.run import main
from smpler_deploy.pipeline.params import read_params
args = [{str(tmp_path / 'img')!r}, "--backend", "onnxruntime", "--onnx", {str(onnx_fp32)!r}, "--threads", "1",
        "--no-overlay"]
assert main([*args, "-o", {str(tmp_path / 'o1')!r}, "--boxes", {str(tracked)!r}]) == 0
print("after ids from the file:", "norfair" in sys.modules, read_params({str(tmp_path / 'o1' / 'params.npz')!r})[0]["track_id"].tolist())
assert main([*args, "-o", {str(tmp_path / 'o2')!r}, "--boxes", {str(untracked)!r}]) == 0
print("after the tracker:", "norfair" in sys.modules, read_params({str(tmp_path / 'o2' / 'params.npz')!r})[0]["track_id"].tolist())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "after ids from the file: False [1]" in out.stdout and "after the tracker: True [1]" in out.stdout
