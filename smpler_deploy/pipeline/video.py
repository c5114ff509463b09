"""Frame sources (an image, a folder of images, a video file, a camera) and the mp4 overlay writer, with PyAV.

A camera is a V4L2 device path (/dev/video0) or an index (`0`, `cam:0`); a stream is a URL FFmpeg opens (rtsp://,
http://, udp://, ...). Every source yields `Frame`s of uint8 RGB [H,W,3]; bad input (missing file, unreadable video,
no camera) is a one-line `SmplerError` naming it.

Live sources (`Source.live`: cameras, and any video or stream opened with `realtime=True`, which is then paced at
its own frame rate) do not wait for the consumer: `pipeline.runner` keeps only the newest frame of one and counts the
frames it had to drop. FFmpeg's frame threads decode ahead for files; a live source decodes with slice threads, which
add no frames of delay.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import OptionError, SmplerError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_CAMERA = re.compile(r"^(?:cam:)?(\d+)$|^(/dev/video\d+)$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


@dataclass
class Frame:
    index: int  # 0-based, in reading order (what a boxes file's `frame` refers to)
    image: np.ndarray  # uint8 RGB [H,W,3]
    name: str  # file name for images, "frame_000123" for video
    time_s: float | None = None  # presentation time for video
    captured: float | None = None  # time.perf_counter() when the source delivered it (for capture-to-result latency)


class Source:
    kind = "images"  # "images" | "video" | "camera" | "stream"
    fps: float | None = None
    live = False  # frames arrive on their own clock (a camera, a `realtime` stream): stale ones may be dropped

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(Source):
    kind = "images"

    def __init__(self, paths: list[Path], where: str):
        self.paths, self.where = paths, where
        self.description = f"{len(paths)} image(s) from {where}"

    def __iter__(self):
        from ..preprocess import load_image

        for i, p in enumerate(self.paths):
            yield Frame(i, load_image(p), p.name)


class AVSource(Source):
    """A video file, a stream or a camera through PyAV (FFmpeg). `realtime`: deliver frames at the source's own
    frame rate (a file played as if it were a live stream) and mark the source live."""

    def __init__(self, url: str, *, camera: bool, max_frames: int | None = None, realtime: bool = False,
                 stream: bool = False):
        import av

        self.url, self.max_frames = url, max_frames
        self.kind = "camera" if camera else "stream" if stream else "video"
        self.live = camera or realtime
        self.paced = realtime and not camera  # a camera delivers at its own rate already
        try:
            self.container = av.open(url, format="v4l2" if camera and url.startswith("/dev/") else None)
        except FileNotFoundError:
            what = "camera not found (expected a V4L2 device such as /dev/video0)" if camera else "file not found"
            raise SmplerError(f"{url}: {what}")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            what = "cannot open camera" if camera else "cannot read video"
            raise SmplerError(f"{url}: {what} ({_av_reason(e)})")
        if not self.container.streams.video:
            self.container.close()
            raise SmplerError(f"{url}: no video stream (expected a video file such as .mp4/.mkv/.avi)")
        self.stream = self.container.streams.video[0]
        # frame threads decode ahead (throughput, a few frames of delay); slice threads add no delay (live)
        self.stream.thread_type = "SLICE" if self.live else "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.description = f"{self.kind} {url}" + (f" ({self.fps:.3g} fps)" if self.fps else "")

    def __iter__(self):
        import av

        n = 0
        start = first = None
        try:
            for frame in self.container.decode(self.stream):
                if self.max_frames is not None and n >= self.max_frames:
                    break
                t = float(frame.pts * self.stream.time_base) if frame.pts is not None else None
                if self.paced:  # wait for the frame's presentation time on the wall clock
                    due = (t - first) if t is not None and first is not None else n / (self.fps or 25.0)
                    if start is None:
                        start, first = time.perf_counter(), t
                    elif (wait := start + due - time.perf_counter()) > 0:
                        time.sleep(wait)
                yield Frame(n, frame.to_ndarray(format="rgb24"), f"frame_{n:06d}", t)
                n += 1
        except av.error.FFmpegError as e:
            raise SmplerError(f"{self.url}: cannot decode frame {n} ({_av_reason(e)})")
        if n == 0:
            raise SmplerError(f"{self.url}: no decodable video frames")

    def close(self) -> None:
        self.container.close()


def _av_reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e).splitlines()[0] or e.__class__.__name__)[:160]


def open_source(spec: str, max_frames: int | None = None, realtime: bool = False) -> Source:
    """An image file, a folder of images, a video file, a stream URL, or a camera (/dev/videoN, N, cam:N).
    `realtime`: a video file or stream is delivered at its frame rate and treated as live (cameras always are)."""
    m = _CAMERA.match(str(spec))
    if m:
        dev = m.group(2) or f"/dev/video{m.group(1)}"
        if not Path(dev).exists():
            raise SmplerError(f"{spec}: camera not found ({dev} does not exist; expected a V4L2 device such as "
                              "/dev/video0)")
        return AVSource(dev, camera=True, max_frames=max_frames)
    if _URL.match(str(spec)):
        return AVSource(str(spec), camera=False, max_frames=max_frames, realtime=realtime, stream=True)
    p = Path(spec)
    if realtime and (p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES):
        raise OptionError("realtime", None, f"{p} is an image or a folder of images, which has no frame rate "
                          "(expected a video file, a stream or a camera)")
    if p.is_dir():
        paths = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        if not paths:
            raise SmplerError(f"{p}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSource(paths[:max_frames] if max_frames else paths, str(p))
    if not p.exists():
        raise SmplerError(f"{p}: no such file or folder (expected an image, a folder of images, a video file or a "
                          "camera such as /dev/video0)")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([p], str(p))
    return AVSource(str(p), camera=False, max_frames=max_frames, realtime=realtime)


class VideoWriter:
    """mp4 (H.264 via libx264 when FFmpeg has it, else MPEG-4 Part 2), written to a temporary file and renamed
    into place by `close()`, so an interrupted run leaves no half-written video."""

    def __init__(self, path, fps: float | None, codec: str | None = None):
        import av

        from ..fileio import atomic_path

        self.path = Path(path)
        self._atomic = atomic_path(self.path, suffix=".mp4")
        tmp = self._atomic.__enter__()
        self.codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        self.container = av.open(str(tmp), mode="w", format="mp4")
        self.rate = Fraction(fps or 25).limit_denominator(1001)
        self.stream = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        import av

        img = np.asarray(image, np.uint8)
        h, w = img.shape[:2]
        if self.stream is None:
            self.stream = self.container.add_stream(self.codec, rate=self.rate)
            self.stream.width, self.stream.height = w + (w % 2), h + (h % 2)  # yuv420p needs even sizes
            self.stream.pix_fmt = "yuv420p"
            if self.codec == "mpeg4":
                self.stream.bit_rate = 8_000_000
        W, H = self.stream.width, self.stream.height
        if (w, h) != (W, H):
            img = np.pad(img[:H, :W], ((0, max(0, H - h)), (0, max(0, W - w)), (0, 0)), mode="edge")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> Path | None:
        """Finish the file and rename it into place (`ok`), or drop it. A failure to flush or close the container
        (a full disk) drops it too: a video is kept only when FFmpeg wrote all of it."""
        done = False
        try:
            if ok and self.stream is not None:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
            self.container.close()
            done = ok and self.frames > 0
        finally:
            if not done:
                try:
                    self.container.close()  # a flush that failed leaves the container open
                except Exception:  # noqa: BLE001 - the first error is the one reported
                    pass
            exc = (None, None, None) if done else (RuntimeError, RuntimeError("aborted"), None)
            try:
                self._atomic.__exit__(*exc)
            except RuntimeError:
                pass
        return self.path if done else None
