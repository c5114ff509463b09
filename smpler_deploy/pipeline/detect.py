"""Person detectors: a YOLO model in ultralytics' export layout (ONNX through ONNX Runtime, or a TensorRT engine),
OpenCV's built-in detectors (offline, weaker), or boxes read from a JSON/CSV file.

Every detector maps an RGB frame (uint8 [H,W,3]) and its index to `Detections`: boxes x, y, w, h in image
pixels (pixel-edge coordinates, as `preprocess.box_transform` reads them), scores, and track ids when a boxes file
carries them. Nothing is downloaded: the YOLO file is the user's, and OpenCV's detectors ship inside its wheel.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError, SmplerError, opt

PERSON_CLASS = 0  # COCO "person", as ultralytics models number it
YOLO_LAYOUT = ("one input [1,3,H,W] (RGB in [0,1], letterboxed) and one output [1,4+classes,N] "
               "(cx, cy, w, h in input pixels, then per-class scores; person = class 0), as ultralytics exports "
               "YOLOv8/YOLO11")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class Detections:
    boxes: np.ndarray  # [N,4] float64 x, y, w, h (image pixels)
    scores: np.ndarray  # [N] float64
    track_ids: np.ndarray | None = None  # [N] int64 from a boxes file, else None (the tracker assigns them)

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4)), np.zeros(0))


def nms(boxes, scores, score_thr: float, iou_thr: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (OpenCV's), best score first."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    keep = cv2.dnn.NMSBoxes(np.asarray(boxes, np.float64).tolist(), np.asarray(scores, np.float64).tolist(),
                            float(score_thr), float(iou_thr))
    return np.asarray(keep, np.int64).reshape(-1)


def iou(a, b) -> np.ndarray:
    """IoU between boxes a [N,4] and b [M,4] (x, y, w, h) -> [N,M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum((a[:, 0] + a[:, 2])[:, None], (b[:, 0] + b[:, 2])[None])
    y1 = np.minimum((a[:, 1] + a[:, 3])[:, None], (b[:, 1] + b[:, 3])[None])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-12)


def clip_boxes(boxes, image_hw) -> np.ndarray:
    h, w = image_hw
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
    x1, y1 = np.clip(b[:, 0] + b[:, 2], 0, w), np.clip(b[:, 1] + b[:, 3], 0, h)
    return np.stack([x0, y0, x1 - x0, y1 - y0], 1)


# ----------------------------------------------------------------------------------------------------------------
# YOLO (ultralytics export layout)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Letterbox:
    scale: float  # input pixels per image pixel
    pad_x: float
    pad_y: float


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, pad with gray 114 centred (ultralytics' LetterBox) -> float32 [1,3,H,W]."""
    import cv2

    th, tw = size
    h, w = image.shape[:2]
    r = min(th / h, tw / w)
    nw, nh = round(w * r), round(h * r)
    left, top = round((tw - nw) / 2 - 0.1), round((th - nh) / 2 - 0.1)
    out = np.full((th, tw, 3), 114, np.uint8)
    out[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = np.ascontiguousarray(np.moveaxis(out, -1, 0)[None], np.float32) / 255.0
    return x, Letterbox(r, float(left), float(top))


def yolo_layout_error(path, inputs, outputs) -> str | None:
    """None when the I/O shapes (lists; None/str for dynamic dims) are YOLO's export layout, else the message."""
    i = inputs[0] if len(inputs) == 1 else None
    ok_in = i is not None and len(i) == 4 and i[1] in (3, None)
    o = outputs[0] if len(outputs) == 1 else None
    ok_out = (o is not None and len(o) == 3 and isinstance(o[1], int) and o[1] >= 5
              and (not isinstance(o[2], int) or o[2] > o[1]))  # [1,84,8400]; [1,8400,84] is the transposed layout
    if ok_in and ok_out:
        return None
    show = lambda shapes: ", ".join("[" + ",".join("?" if not isinstance(d, int) else str(d) for d in s) + "]"
                                    for s in shapes)
    return (f"{path}: not a person detector in the YOLO export layout: expected {YOLO_LAYOUT}; "
            f"got inputs {show(inputs)}, outputs {show(outputs)}")


def decode_yolo(out: np.ndarray, lb: Letterbox, image_hw, conf: float = 0.25, iou_thr: float = 0.45,
                person_class: int = PERSON_CLASS, where: str = "detector") -> Detections:
    """[1,4+nc,N] raw YOLO output -> person detections in image pixels (ultralytics' post-processing: a box
    counts for the class with its best score; greedy NMS)."""
    out = np.asarray(out, np.float32)
    if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] < 5 or out.shape[1] <= person_class + 4:
        raise SmplerError(f"{where}: output has shape {list(out.shape)}; expected {YOLO_LAYOUT}")
    p = out[0]
    cls = p[4:]
    best = cls.argmax(0)
    score = cls[person_class]
    keep = (best == person_class) & (score >= conf)
    cx, cy, w, h = (p[i, keep].astype(np.float64) for i in range(4))
    boxes = np.stack([(cx - w / 2 - lb.pad_x) / lb.scale, (cy - h / 2 - lb.pad_y) / lb.scale,
                      w / lb.scale, h / lb.scale], 1)
    boxes = clip_boxes(boxes, image_hw)
    score = score[keep].astype(np.float64)
    valid = (boxes[:, 2] > 1) & (boxes[:, 3] > 1)
    boxes, score = boxes[valid], score[valid]
    k = nms(boxes, score, conf, iou_thr)
    return Detections(boxes[k], score[k])


class _OrtRunner:
    def __init__(self, path: Path, threads: int | None, provider: str):
        import onnxruntime as ort

        from ..runtime.ort_providers import PROVIDERS, check_available, parse_provider

        provider = parse_provider(provider)
        check_available(provider, ort.get_available_providers())
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # it shares the cores with the model
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=[PROVIDERS[provider]])
        except Exception as e:
            raise OptionError("detector", path, f"onnxruntime cannot load it ({str(e).splitlines()[0][:200]})")
        dims = lambda t: [d if isinstance(d, int) else None for d in t.shape]
        self.inputs = [dims(t) for t in self.sess.get_inputs()]
        self.outputs = [dims(t) for t in self.sess.get_outputs()]
        self.in_name = self.sess.get_inputs()[0].name
        self.in_dtype = np.float16 if self.sess.get_inputs()[0].type == "tensor(float16)" else np.float32  # half=True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.in_name: x.astype(self.in_dtype, copy=False)})[0]

    def close(self) -> None:
        self.sess = None


PLAN_MAGICS = (b"ftrt", b"vtrt")  # the first bytes of a TensorRT / TensorRT-RTX plan


def read_engine_file(path: Path) -> tuple[bytes, dict | None]:
    """(plan, metadata) of an engine file. ultralytics writes a 4-byte little-endian length and its JSON metadata
    (imgsz, names, stride, task, ...) before the plan (`engine/exporter.py`; `nn/autobackend.py` strips them);
    a plain TensorRT plan has no header (metadata None)."""
    data = path.read_bytes()
    if data[:4] in PLAN_MAGICS or len(data) < 8:
        return data, None
    n = int.from_bytes(data[:4], "little", signed=True)
    if 0 < n <= len(data) - 4:
        try:
            meta = json.loads(data[4:4 + n].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            meta = None
        if isinstance(meta, dict):
            return data[4 + n:], meta
    return data, None


def _person_class(meta: dict | None, path: Path) -> int:
    """The "person" class index from ultralytics' `names` ({0: "person", ...}; JSON keys are strings)."""
    names = (meta or {}).get("names")
    if not isinstance(names, dict) or not names:
        return PERSON_CLASS
    for k, v in names.items():
        if str(v).strip().lower() == "person":
            return int(k)
    shown = ", ".join(str(v) for v in list(names.values())[:5])
    raise OptionError("detector", path, f"its classes ({shown}, ...) have no 'person'; expected a person detector")


class _TrtRunner:
    """The detector's engine through the runtime's one TensorRT executor (plain enqueues; buffers grown on demand
    and freed by `close`)."""

    def __init__(self, path: Path, flavour: str | None = None, api=None):
        from ..runtime.tensorrt import TrtCudaApi, TrtExecutor

        plan, self.metadata = read_engine_file(path)
        api = api if api is not None else TrtCudaApi(flavour or "tensorrt")
        self.exe = TrtExecutor(api, plan, f"{opt('detector')} {path}", flavour=api.flavour, cuda_graphs=False)
        dims = lambda s: [d if d >= 0 else None for d in s.shape]
        self.inputs, self.outputs = [dims(s) for s in self.exe.inputs], [dims(s) for s in self.exe.outputs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        i, o = self.exe.inputs[0], self.exe.outputs[0]
        return self.exe.run({i.name: np.ascontiguousarray(x, i.dtype)})[o.name]

    def close(self) -> None:
        self.exe.close()


class YoloDetector:
    """A user-supplied person detector in ultralytics' export layout (`.onnx`, or a TensorRT engine)."""

    label = "YOLO"

    def __init__(self, path, *, conf: float = 0.25, iou: float = 0.45, threads: int | None = None,
                 provider: str = "cpu", trt_flavour: str | None = None, api=None):
        path = Path(path)
        if not path.is_file():
            raise OptionError("detector", path, "file not found (expected a YOLO .onnx or TensorRT engine)")
        meta = None
        if path.suffix.lower() in ENGINE_SUFFIXES:
            self.runner = _TrtRunner(path, trt_flavour, api)
            meta = self.runner.metadata
        else:
            self.runner = _OrtRunner(path, threads, provider)
        try:
            err = yolo_layout_error(path, self.runner.inputs, self.runner.outputs)
            if err:
                raise SmplerError(err)
            self.person_class = _person_class(meta, path)
        except SmplerError:
            self.close()
            raise
        # Input size: the engine's fixed dims, else ultralytics' metadata imgsz ([h, w] or one int), else 640.
        imgsz = (meta or {}).get("imgsz", 640)
        imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
        h, w = self.runner.inputs[0][2:]
        self.size = (h if isinstance(h, int) else int(imgsz[0]), w if isinstance(w, int) else int(imgsz[-1]))
        self.path, self.conf, self.iou = path, conf, iou
        self.label = f"YOLO {path.name}"

    def __call__(self, image: np.ndarray, frame_index: int = 0) -> Detections:
        x, lb = letterbox(image, self.size)
        return decode_yolo(self.runner(x), lb, image.shape[:2], self.conf, self.iou, person_class=self.person_class,
                           where=f"{opt('detector')} {self.path}")

    def close(self) -> None:
        """Frees the engine's stream and buffers (TensorRT) or the ONNX Runtime session."""
        self.runner.close()


# ----------------------------------------------------------------------------------------------------------------
# OpenCV's built-in detectors (ship inside the opencv wheel)
# ----------------------------------------------------------------------------------------------------------------

class OpenCVDetector:
    """Offline fallback, clearly weaker than a learned detector: OpenCV's HOG pedestrian detector (upright,
    whole bodies) plus its frontal-face Haar cascade, each face grown to a person box (a body is ~7.5 heads tall,
    ~3 heads wide; clipped to the frame) so portraits and half-body shots get a box too. Face-anchored boxes rank
    first (the cascade's false-positive rate is the lower of the two); overlapping boxes are merged by NMS. HOG
    boxes need an SVM margin of at least `hog_threshold` (1.0: on scikit-image's astronaut, flags and a helmet
    score 0.6-0.8)."""

    label = "OpenCV HOG + face cascade (built-in, weaker than a learned detector)"

    def __init__(self, *, hog_threshold: float = 1.0, iou: float = 0.3, max_side: int = 640):
        import cv2

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        face = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.face = cv2.CascadeClassifier(str(face))
        if self.face.empty():
            raise SmplerError(f"{face}: OpenCV's face cascade is missing from this opencv install")
        self.hog_threshold, self.iou, self.max_side = hog_threshold, iou, max_side

    def __call__(self, image: np.ndarray, frame_index: int = 0) -> Detections:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else image
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        faces, _, fw = self.face.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5, outputRejectLevels=True)
        pad = 32  # HOG windows need context beyond the frame edge; replicate it
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        bodies, bw = self.hog.detectMultiScale(padded, winStride=(8, 8), padding=(8, 8), scale=1.05)
        boxes, scores = [], []
        for (x, y, fwid, fh), wt in zip(np.asarray(faces).reshape(-1, 4), np.ravel(fw)):
            cx = x + fwid / 2
            boxes.append([cx - 1.5 * fwid, y - 0.5 * fh, 3 * fwid, 7.5 * fh])
            scores.append(2.0 + float(wt) / 100)  # ranks above every HOG box
        for (x, y, bwid, bh), wt in zip(np.asarray(bodies).reshape(-1, 4), np.ravel(bw)):
            if wt >= self.hog_threshold:
                boxes.append([x - pad, y - pad, bwid, bh])
                scores.append(min(float(wt), 1.99))
        if not boxes:
            return Detections.empty()
        b = clip_boxes(np.asarray(boxes, np.float64) / s, (h, w))
        sc = np.asarray(scores, np.float64)
        k = nms(b, sc, 0.0, self.iou)
        return Detections(b[k], sc[k])

    def close(self) -> None:  # every detector has close(); OpenCV's hold nothing to free
        pass


# ----------------------------------------------------------------------------------------------------------------
# Boxes from a file
# ----------------------------------------------------------------------------------------------------------------

BOXES_FORMAT = ("JSON: a list of {\"frame\": N, \"bbox\": [x, y, w, h], \"track\": id (optional), \"score\": s "
                "(optional)}; CSV: rows frame,x,y,w,h[,track] (a header row is allowed)")


def read_boxes(path) -> dict[int, Detections]:
    """Boxes per frame index (0-based, in the order smpler-run reads frames) from a JSON or CSV file."""
    path = Path(path)
    if not path.is_file():
        raise OptionError("boxes", path, "file not found")
    rows = []
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = data.get("boxes", data)
            for r in data:
                b = r["bbox"] if "bbox" in r else [r["x"], r["y"], r["w"], r["h"]]
                rows.append((int(r["frame"]), *map(float, b), r.get("track"), float(r.get("score", 1.0))))
        else:
            with open(path, newline="") as fh:
                for i, rec in enumerate(csv.reader(fh)):
                    rec = [c.strip() for c in rec if c.strip() != ""]
                    if not rec or rec[0].startswith("#") or (i == 0 and not rec[0].lstrip("-").isdigit()):
                        continue
                    if len(rec) not in (5, 6):
                        raise ValueError(f"line {i + 1} has {len(rec)} fields")
                    rows.append((int(rec[0]), *map(float, rec[1:5]), int(rec[5]) if len(rec) == 6 else None, 1.0))
    except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
        raise OptionError("boxes", path, f"cannot read boxes ({e}); expected {BOXES_FORMAT}")
    out: dict[int, list] = {}
    for frame, x, y, w, h, track, score in rows:
        if not np.isfinite([x, y, w, h, score]).all() or w <= 0 or h <= 0 or frame < 0:
            raise OptionError("boxes", path, f"frame {frame} box {x:g},{y:g},{w:g},{h:g}: need frame >= 0, "
                              "finite numbers and positive width and height")
        out.setdefault(frame, []).append((x, y, w, h, -1 if track is None else int(track), score))
    dets = {}
    for frame, rs in out.items():
        a = np.asarray(rs, np.float64)
        tracks = a[:, 4].astype(np.int64)
        dets[frame] = Detections(a[:, :4], a[:, 5], tracks if (tracks >= 0).all() else None)
    return dets


class BoxFileDetector:
    label = "boxes file"

    def __init__(self, path):
        self.boxes = read_boxes(path)
        self.label = f"boxes from {Path(path).name}"
        # every frame's boxes carry their track ids: smpler-run takes them and runs no tracker
        self.tracked = bool(self.boxes) and all(d.track_ids is not None for d in self.boxes.values())

    def __call__(self, image: np.ndarray, frame_index: int = 0) -> Detections:
        d = self.boxes.get(frame_index)
        if d is None:
            return Detections.empty()
        return Detections(clip_boxes(d.boxes, image.shape[:2]), d.scores, d.track_ids)

    def close(self) -> None:
        pass


def open_detector(spec: str | None, *, boxes=None, conf: float = 0.25, iou: float = 0.45, threads=None,
                  provider: str = "cpu", trt_flavour: str | None = None):
    """`boxes` (a JSON/CSV file), else `spec` (a YOLO .onnx / engine path), else 'opencv' (the built-in
    fallback)."""
    if boxes is not None:
        return BoxFileDetector(boxes)
    if spec in (None, "", "opencv", "builtin"):
        return OpenCVDetector()
    return YoloDetector(spec, conf=conf, iou=iou, threads=threads, provider=provider, trt_flavour=trt_flavour)
