"""The smpler-run loop, three threads joined by bounded queues: a background thread decodes, detects and crops
frames; the main thread batches crops into session calls, tracks and smooths; an output thread draws the overlays
and hands finished frames (in order) to the caller's writer. Per-stage times are summed for a summary.

Memory stays bounded: at most `queue_size` prepared frames wait for inference and as many finished frames wait
for drawing, and the session sees at most `max_batch` crops per call.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import SmplerError
from ..runtime.base import NonFiniteError
from .crops import infer_batched, person_crops
from .detect import Detections
from .params import PersonParams, people_params, weak_camera
from .track import BoxTracker, ParamSmoother

PRODUCER_STAGES = ("decode", "detect", "crop")
CONSUMER_STAGES = ("infer", "track+params")
OUTPUT_STAGES = ("overlay", "write")


_THREAD = {**{s: "decode" for s in PRODUCER_STAGES}, **{s: "main" for s in CONSUMER_STAGES},
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


@dataclass
class StageTimes:
    seconds: dict = field(default_factory=lambda: {s: 0.0 for s in PRODUCER_STAGES + CONSUMER_STAGES + OUTPUT_STAGES})
    frames: int = 0
    people: int = 0
    calls: int = 0
    wall_s: float = 0.0

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] += dt

    def summary(self) -> dict:
        f = max(self.frames, 1)
        return {
            "frames": self.frames, "people": self.people, "session_calls": self.calls, "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames / self.wall_s, 3) if self.wall_s > 0 else None,
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
        rows.append(f"whole pipeline: {s['frames']} frames, {s['people']} people, {s['session_calls']} session "
                    f"calls, {s['wall_s']:.2f} s wall, {fps:.2f} frames/s (the decode and output threads overlap inference)")
        return "\n".join(rows)


@dataclass
class Prepared:
    frame: object  # video.Frame
    dets: Detections
    crops: np.ndarray  # [K,3,224,224]
    transforms: list
    keep: np.ndarray  # indices into dets of the K crops


_DONE = object()


def _produce(source, detector, times: StageTimes, q: queue.Queue, stop: threading.Event) -> None:
    try:
        it = iter(source)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            dets = detector(frame.image, frame.index)
            t2 = time.perf_counter()
            crops, transforms, keep = person_crops(frame.image, dets.boxes)
            t3 = time.perf_counter()
            times.add("decode", t1 - t0)
            times.add("detect", t2 - t1)
            times.add("crop", t3 - t2)
            _put(q, Prepared(frame, dets, crops, transforms, keep), stop)
        _put(q, _DONE, stop)
    except BaseException as e:  # handed to the main thread, which re-raises it
        _put(q, e, stop)


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
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _output(q: queue.Queue, faces, label, on_frame, times: StageTimes, stop: threading.Event, errors: list) -> None:
    """Draw and hand over finished frames in order; the first error stops the run (the main thread re-raises)."""
    from ..render import Camera, render_people

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
    order, on the output thread (the CLI writes overlays there). Returns all people of all frames and the stage
    times."""
    cfg = config or RunConfig()
    tracker = BoxTracker() if cfg.track else None
    smoother = ParamSmoother(cfg.smooth, getattr(source, "fps", None))
    if smoother.enabled and body is None:
        raise SmplerError("--smooth: needs the body model to re-pose smoothed parameters")
    if cfg.overlay and faces is None:
        raise SmplerError("overlay: needs the mesh faces")
    times = StageTimes()
    q: queue.Queue = queue.Queue(maxsize=max(1, cfg.queue_size))
    out_q: queue.Queue = queue.Queue(maxsize=max(1, cfg.queue_size))
    stop, out_stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    producer = threading.Thread(target=_produce, args=(source, detector, times, q, stop), daemon=True,
                                name="smpler-run-decode")
    writer = threading.Thread(target=_output, args=(out_q, faces, label, on_frame, times, out_stop, errors),
                              daemon=True, name="smpler-run-output")
    all_people: list[PersonParams] = []
    warned: list[int] = []  # frames whose boxes were dropped (the first few are named)
    pending = None
    if cfg.overlay:
        from ..render import warm_up

        warm_up()  # compile the rasteriser (or load numba's cache) before timing, as the session is loaded before
    start = time.perf_counter()
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
            t0 = time.perf_counter()
            outs = _infer_group(session, group, cfg.max_batch, log)
            times.add("infer", time.perf_counter() - t0)
            times.calls += -(-n // cfg.max_batch) if n else 0
            for g, out in zip(group, outs):
                _warn_dropped_boxes(g, log, warned)
                people, meshes = _finish(g, out, cfg, tracker, smoother, body, times)
                all_people.extend(people)
                _put(out_q, (g.frame, meshes, people, cfg.overlay), out_stop)
        finished = True
    except KeyboardInterrupt:
        if getattr(source, "kind", "") != "camera":
            raise
        log("stopped (Ctrl-C): writing what was captured")
        finished = True
    finally:
        stop.set()
        _drain(producer, q)
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


def _finish(g: Prepared, out, cfg, tracker, smoother, body, times) -> tuple[list[PersonParams], list[dict]]:
    """Track ids, parameters, optional smoothing for one frame -> (people, meshes to draw)."""
    from ..render import to_pixels

    t0 = time.perf_counter()
    frame = g.frame
    if g.dets.track_ids is not None:
        ids = g.dets.track_ids[g.keep]
    elif tracker is not None:
        ids = tracker.update(g.dets.boxes[g.keep])
    else:
        ids = None
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
