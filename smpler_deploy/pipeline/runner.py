"""The smpler-run loop, four threads: a decode thread reads frames (FFmpeg's own threads decode inside it); a
prepare thread detects people (every `detect_every`-th frame; the tracker carries the boxes and assigns track ids)
and crops them; the main thread batches crops into session calls and derives parameters (smoothing too); an output
thread draws the overlays and hands finished frames (in order) to the caller's writer. Per-stage times are summed
for a summary, with capture-to-result latency (p50/p99) and the frames a live source dropped.

Files are read at the pipeline's pace: bounded queues hold at most `queue_size` decoded frames, as many prepared
frames and as many finished frames, and the session sees at most `max_batch` crops per call. A live source (a
camera, a `--realtime` stream: `Source.live`) is never held back: the decode thread keeps only the newest frame,
dropping one the prepare thread has not taken yet, and at most one prepared frame waits for inference, so a frame's
latency is bounded by a few frames' processing time instead of growing with the backlog.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..camera import weak_camera
from ..errors import OptionError, SmplerError, opt
from ..preprocess import to_pixels
from ..runtime.base import NonFiniteError
from .crops import infer_batched, person_crops
from .detect import Detections, clip_boxes
from .params import PersonParams, people_params
from .track import BoxTracker, ParamSmoother

PRODUCER_STAGES = ("decode", "detect", "crop")
CONSUMER_STAGES = ("infer", "track+params")
OUTPUT_STAGES = ("overlay", "write")


_THREAD = {"decode": "decode", "detect": "prepare", "crop": "prepare", **{s: "main" for s in CONSUMER_STAGES},
           **{s: "output" for s in OUTPUT_STAGES}}


@dataclass
class RunConfig:
    max_batch: int = 8
    queue_size: int = 8
    focal_length: float | None = None  # pixels; None = image diagonal
    track: bool = True
    smooth: str = "none"
    overlay: bool = True
    draw_joints: bool = True
    keep_vertices: bool = False
    detect_every: int = 1  # run the detector on every N-th frame; the tracker carries the boxes in between


@dataclass
class StageTimes:
    seconds: dict = field(default_factory=lambda: {s: 0.0 for s in PRODUCER_STAGES + CONSUMER_STAGES + OUTPUT_STAGES})
    frames: int = 0
    people: int = 0
    calls: int = 0
    wall_s: float = 0.0
    captured: int = 0  # frames the source delivered
    dropped: int = 0  # of those, stale frames of a live source dropped unprocessed
    latencies: list = field(default_factory=list)  # seconds from delivery to the finished frame, per frame
    live: bool = False

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] += dt

    def latency_ms(self) -> dict:
        if not self.latencies:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(np.asarray(self.latencies) * 1000, [50, 99])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}

    def summary(self) -> dict:
        f = max(self.frames, 1)
        return {
            "frames": self.frames, "people": self.people, "session_calls": self.calls, "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames / self.wall_s, 3) if self.wall_s > 0 else None,
            "live": self.live, "frames_captured": self.captured, "frames_dropped": self.dropped,
            "latency_ms": self.latency_ms(),
            "stages": {s: {"total_s": round(t, 3), "ms_per_frame": round(1000 * t / f, 2),
                           "frames_per_s_alone": round(self.frames / t, 2) if t > 0 else None,
                           "thread": _THREAD[s]}
                       for s, t in self.seconds.items()},
        }

    def table(self) -> str:
        s = self.summary()
        rows = [f"{'stage':<14}{'thread':<12}{'total s':>9}{'ms/frame':>10}{'fps alone':>11}"]
        for name, v in s["stages"].items():
            fps = "-" if v["frames_per_s_alone"] is None else f"{v['frames_per_s_alone']:.1f}"
            rows.append(f"{name:<14}{v['thread']:<12}{v['total_s']:>9.2f}{v['ms_per_frame']:>10.1f}{fps:>11}")
        fps = s["frames_per_s"] or 0.0
        lat = s["latency_ms"]
        lat_txt = "-" if lat["p50"] is None else f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms"
        rows.append(f"whole pipeline: {s['frames']} frames, {s['people']} people, {s['session_calls']} session "
                    f"calls, {s['wall_s']:.2f} s wall, {fps:.2f} frames/s (the decode, prepare and output threads "
                    "overlap inference)")
        rows.append(f"latency from capture to result: {lat_txt}; frames dropped: {s['frames_dropped']} of "
                    f"{s['frames_captured']}" + (" (live source: the newest frame is kept)" if s["live"] else ""))
        return "\n".join(rows)


@dataclass
class Prepared:
    frame: object  # video.Frame
    dets: Detections
    crops: np.ndarray  # [K,3,224,224]
    transforms: list
    keep: np.ndarray  # indices into dets of the K crops


_DONE = object()


class _Latest:
    """A live source's hand-over: holds only the newest frame; a frame not taken before the next one arrives is
    dropped (counted). The end marker or an error queues behind the last frame and is never dropped."""

    def __init__(self):
        self.cv = threading.Condition()
        self.items: collections.deque = collections.deque()
        self.dropped = 0

    def put(self, item, stop: threading.Event) -> None:
        with self.cv:
            if self.items and self.items[-1] is not _DONE and not isinstance(self.items[-1], BaseException) \
                    and item is not _DONE and not isinstance(item, BaseException):
                self.items.pop()
                self.dropped += 1
            self.items.append(item)
            self.cv.notify()

    def get(self, timeout: float | None = None):
        with self.cv:
            if not self.items:
                self.cv.wait(timeout)
            if not self.items:
                raise queue.Empty
            return self.items.popleft()

    def get_nowait(self):
        return self.get(0)


class _Bounded(queue.Queue):
    """A file's hand-over: the reader waits for room (back-pressure), giving up when the run stops."""

    def put(self, item, stop: threading.Event) -> None:  # type: ignore[override]
        _put_queue(super().put, item, stop)


# Niceness of the decode, prepare and output threads: ONNX Runtime's intra-op threads wait for their slowest at
# every operator, so a helper preempting one stalls all; lower, the helpers take the cores inference leaves.
HELPER_NICE = 10


def _lower_priority() -> None:
    try:  # per thread on Linux
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + HELPER_NICE)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # no per-thread priorities here (or not permitted): run as is
        pass


def _decode(source, times: StageTimes, out, stop: threading.Event) -> None:
    """Read frames, stamping each with its delivery time, and hand them on."""
    _lower_priority()
    try:
        it = iter(source)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                break
            frame.captured = t1 = time.perf_counter()
            times.add("decode", t1 - t0)  # a `realtime` file's waits for the frame's time count here too
            times.captured += 1
            out.put(frame, stop)
        out.put(_DONE, stop)
    except BaseException as e:  # handed on to the main thread, which re-raises it
        out.put(e, stop)


def _prepare(frames, detector, tracker, every: int, times: StageTimes, q, stop: threading.Event) -> None:
    """People and crops for each frame: the detector on every `every`-th frame taken (a live source's dropped
    frames do not count), the tracker's predicted boxes in between; track ids from the tracker (or the boxes
    file)."""
    n = 0
    _lower_priority()
    try:
        while not stop.is_set():
            try:
                frame = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if frame is _DONE or isinstance(frame, BaseException):
                q.put(frame, stop)
                return
            t1 = time.perf_counter()
            if tracker is not None and n % every:
                boxes, ids, scores = tracker.predict()
                dets = Detections(clip_boxes(boxes, frame.image.shape[:2]), scores, ids)
            else:
                dets = detector(frame.image, frame.index)
            t2 = time.perf_counter()
            crops, transforms, keep = person_crops(frame.image, dets.boxes)
            t3 = time.perf_counter()
            if tracker is not None and dets.track_ids is None:
                ids = np.full(len(dets), -1, np.int64)
                ids[keep] = tracker.update(dets.boxes[keep], dets.scores[keep])
                dets = replace(dets, track_ids=ids)
            times.add("detect", t2 - t1 + time.perf_counter() - t3)
            times.add("crop", t3 - t2)
            n += 1
            q.put(Prepared(frame, dets, crops, transforms, keep), stop)
    except BaseException as e:
        q.put(e, stop)


class Body:
    """The SMPL layer the session's model uses, for re-posing smoothed parameters (torch, CPU)."""

    def __init__(self, handler):
        self.handler = handler

    def __call__(self, rotmat, betas, cam):
        import torch

        with torch.inference_mode():
            v, _, _, j2d = self.handler(torch.as_tensor(rotmat, dtype=torch.float32)[None],
                                        torch.as_tensor(betas, dtype=torch.float32)[None],
                                        torch.as_tensor(cam, dtype=torch.float32)[None])
        return v[0].numpy(), j2d[0].numpy()


def _drain(thread: threading.Thread, q: queue.Queue) -> None:
    while thread.is_alive():
        try:
            q.get_nowait()
        except queue.Empty:
            thread.join(timeout=0.1)


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    _put_queue(q.put, item, stop)


def _put_queue(put, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _output(q: queue.Queue, faces, label, on_frame, times: StageTimes, stop: threading.Event, errors: list) -> None:
    """Draw and hand over finished frames in order; the first error stops the run (the main thread re-raises)."""
    from ..camera import Camera
    from ..render import render_people

    _lower_priority()
    try:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():  # the run was aborted
                    return
                continue
            if item is _DONE or stop.is_set():
                return
            frame, meshes, people, draw = item
            t1 = time.perf_counter()
            # every person of a frame carries the same pinhole camera (focal length, principal point)
            camera = Camera(people[0].focal_length, tuple(people[0].principal_point)) if people else None
            overlay = render_people(frame.image, meshes, faces, camera, label=label) if draw else None
            t2 = time.perf_counter()
            if on_frame is not None:
                on_frame(frame, overlay, people)
            if frame.captured is not None:
                times.latencies.append(time.perf_counter() - frame.captured)
            times.add("overlay", t2 - t1)
            times.add("write", time.perf_counter() - t2)
            times.frames += 1
            times.people += len(people)
    except BaseException as e:
        errors.append(e)
        stop.set()


def run(source, detector, session, *, faces=None, body: Body | None = None, config: RunConfig | None = None,
        label: str | None = None, on_frame=None, log=print) -> tuple[list[PersonParams], StageTimes]:
    """Process every frame of `source`. `on_frame(frame, overlay_or_None, people)` receives each finished frame in
    order, on the output thread (the CLI writes overlays there). -> (all people of all frames, stage times)."""
    cfg = config or RunConfig()
    if cfg.detect_every < 1:
        raise OptionError("detect_every", cfg.detect_every, "expected a positive integer")
    if cfg.detect_every > 1 and not cfg.track:
        why = f"carries boxes between detections with the tracker; drop {opt('no_track')}"
        raise OptionError("detect_every", None, why)
    # a boxes file with every frame's track ids needs no tracker (nor norfair's import, ~1 s of start-up)
    tracker = BoxTracker(period=cfg.detect_every) if cfg.track and not getattr(detector, "tracked", False) else None
    smoother = ParamSmoother(cfg.smooth, getattr(source, "fps", None))
    if smoother.enabled and body is None:
        raise OptionError("smooth", None, "needs the body model to re-pose smoothed parameters")
    if cfg.overlay and faces is None:
        raise SmplerError("overlay: needs the mesh faces")
    live = bool(getattr(source, "live", False))
    times = StageTimes(live=live)
    frames = _Latest() if live else _Bounded(maxsize=max(1, cfg.queue_size))
    q = _Bounded(maxsize=1 if live else max(1, cfg.queue_size))
    out_q: queue.Queue = queue.Queue(maxsize=max(1, cfg.queue_size))
    stop, out_stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    decoder = threading.Thread(target=_decode, args=(source, times, frames, stop), daemon=True,
                               name="smpler-run-decode")
    producer = threading.Thread(target=_prepare, args=(frames, detector, tracker, cfg.detect_every, times, q, stop),
                                daemon=True, name="smpler-run-prepare")
    writer = threading.Thread(target=_output, args=(out_q, faces, label, on_frame, times, out_stop, errors),
                              daemon=True, name="smpler-run-output")
    all_people: list[PersonParams] = []
    warned: list[int] = []  # frames whose boxes were dropped (the first few are named)
    pending = None
    if cfg.overlay:
        from ..render import warm_up

        warm_up()  # compile the rasteriser (or load numba's cache) before timing, as the session is loaded before
    start = time.perf_counter()
    decoder.start()
    producer.start()
    writer.start()
    finished = False
    try:
        while not out_stop.is_set():
            item = pending if pending is not None else q.get()
            pending = None
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            group = [item]
            n = len(item.crops)
            while n < cfg.max_batch:  # fill the batch with frames that are already prepared (never wait for one)
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _DONE or isinstance(nxt, BaseException) or n + len(nxt.crops) > cfg.max_batch:
                    pending = nxt
                    break
                group.append(nxt)
                n += len(nxt.crops)
            for g in group:  # before _infer_group, which empties frames whose outputs are not finite
                _warn_dropped_boxes(g, log, warned)
            t0 = time.perf_counter()
            outs = _infer_group(session, group, cfg.max_batch, log)
            times.add("infer", time.perf_counter() - t0)
            times.calls += -(-n // cfg.max_batch) if n else 0
            for g, out in zip(group, outs):
                people, meshes = _finish(g, out, cfg, smoother, body, times)
                all_people.extend(people)
                _put(out_q, (g.frame, meshes, people, cfg.overlay), out_stop)
        finished = True
    except KeyboardInterrupt:
        if not (live or getattr(source, "kind", "") == "camera"):  # a file: Ctrl-C aborts
            raise
        log("stopped (Ctrl-C): writing what was captured")
        finished = True
    finally:
        stop.set()
        _drain(producer, q)
        _drain(decoder, frames)
        if finished:
            _put(out_q, _DONE, out_stop)
            writer.join()
        else:
            out_stop.set()
            _drain(writer, out_q)
        source.close()
    if errors:
        raise errors[0]
    times.wall_s = time.perf_counter() - start
    times.dropped = getattr(frames, "dropped", 0)
    return all_people, times


WARN_FRAMES = 3  # frames named in full when boxes are dropped; later ones only counted


def _warn_dropped_boxes(g: Prepared, log, warned: list[int]) -> None:
    """A box that lies outside the frame (a boxes file for another video, or wrong units) clips to nothing and
    gives no person: say so instead of writing an empty result silently."""
    dropped = len(g.dets) - len(g.keep)
    if dropped <= 0:
        return
    warned.append(g.frame.index)
    h, w = g.frame.image.shape[:2]
    if len(warned) <= WARN_FRAMES:
        log(f"warning: frame {g.frame.index} ({g.frame.name}): {dropped} box(es) outside the {w}x{h} frame (or "
            "thinner than 2 px inside it); skipped" + ("; further frames are not listed" if len(warned) ==
                                                       WARN_FRAMES else ""))


def _infer_group(session, group: list[Prepared], max_batch: int, log) -> list:
    """infer_batched over the group; a frame whose crops or outputs hold NaN/Inf loses its people with a warning
    (it is still tracked and written, empty) instead of ending the run. Edits `group` in place."""
    while True:
        try:
            return infer_batched(session, [g.crops for g in group], max_batch)
        except NonFiniteError as e:
            ends = np.cumsum([len(g.crops) for g in group])
            bad = sorted({int(np.searchsorted(ends, k, side="right")) for k in e.indices})
            if not bad:
                raise
            for i in bad:
                g = group[i]
                what = f"model output {e.output}" if e.output else "crops"
                log(f"warning: frame {g.frame.index} ({g.frame.name}): non-finite values (NaN/Inf) in the {what}; "
                    "its people are skipped")
                group[i] = replace(g, crops=g.crops[:0], transforms=[], keep=g.keep[:0])


def _finish(g: Prepared, out, cfg, smoother, body, times) -> tuple[list[PersonParams], list[dict]]:
    """Track ids, parameters, optional smoothing for one frame -> (people, meshes to draw)."""
    t0 = time.perf_counter()
    frame = g.frame
    ids = g.dets.track_ids[g.keep] if g.dets.track_ids is not None else None  # the prepare thread tracked
    people = [] if out is None else people_params(out, g.transforms, g.dets, g.keep, frame, cfg.focal_length,
                                                  track_ids=ids, keep_vertices=cfg.keep_vertices)
    meshes = []
    for i, p in enumerate(people):
        verts, j2d = out.vertices[i], out.smpl_joints2d[i]
        if smoother.enabled:
            rot, betas, transl = smoother(p.track_id, frame.index, p.rotmat, p.betas, p.transl, frame.time_s)
            cam = weak_camera(transl, g.transforms[i], p.focal_length, p.principal_point)
            verts, j2d = body(rot, betas, cam)
            p.rotmat, p.betas, p.transl, p.cam = rot, betas, transl, cam
            p.joints2d = to_pixels(j2d, g.transforms[i])
            if cfg.keep_vertices:
                p.vertices = verts
        meshes.append({"vertices": verts, "transl": p.transl, "joints": p.joints2d if cfg.draw_joints else None,
                       "box": p.box, "text": f"#{p.track_id}" if p.track_id >= 0 else None})
    times.add("track+params", time.perf_counter() - t0)
    return people, meshes
