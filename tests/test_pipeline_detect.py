"""smpler-run's detectors: YOLO decoding + NMS on a tiny ONNX model run by ONNX Runtime, OpenCV's built-in
detector on real photos of people, boxes files, and one-line errors for detectors of the wrong layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smpler_deploy.errors import SmplerError
from smpler_deploy.pipeline.detect import (BoxFileDetector, OpenCVDetector, YoloDetector, iou, letterbox,
                                           read_boxes)

IMAGE_HW = (480, 640)
INPUT = 320  # letterbox: scale 0.5, 40 px of padding above and below


def _to_input(box):
    x, y, w, h = box
    return [(x + w / 2) * 0.5, (y + h / 2) * 0.5 + 40, w * 0.5, h * 0.5]


# (image box x,y,w,h, person score, best other class score)
CANDIDATES = [
    ((100, 50, 120, 300), 0.9, 0.0),  # kept
    ((110, 60, 120, 300), 0.8, 0.0),  # overlaps the first (IoU ~0.8): suppressed by NMS
    ((400, 100, 100, 250), 0.6, 0.1),  # kept
    ((300, 300, 50, 50), 0.5, 0.7),  # another class scores higher: not a person
    ((10, 10, 40, 40), 0.1, 0.0),  # below the score threshold
    ((500, 0, 200, 600), 0.4, 0.0),  # runs off the frame: clipped to 500,0,140,480
]
EXPECTED = np.array([[100, 50, 120, 300], [400, 100, 100, 250], [500, 0, 140, 480]], np.float64)


def _yolo_output(n: int = 100) -> np.ndarray:
    out = np.zeros((1, 84, n), np.float32)
    for j, (box, person, other) in enumerate(CANDIDATES):
        out[0, :4, j] = _to_input(box)
        out[0, 4, j] = person
        out[0, 4 + 2, j] = other
    return out


def _write_model(path, out_shape, const=None, in_shape=(1, 3, INPUT, INPUT), outputs=1, dtype=np.float32):
    """An ONNX graph in (or deliberately not in) YOLO's export layout: output = constant + 0 * mean(images)."""
    import onnx
    from onnx import helper, numpy_helper

    const = (np.zeros(out_shape) if const is None else const).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
    ]
    outs = []
    for k in range(outputs):
        nodes.append(helper.make_node("Add", ["c", "z"], [f"output{k}"]))
        outs.append(helper.make_tensor_value_info(f"output{k}", elem, list(out_shape)))
    graph = helper.make_graph(
        nodes, "tiny_yolo", [helper.make_tensor_value_info("images", elem, list(in_shape))], outs,
        initializer=[numpy_helper.from_array(const, "c"), numpy_helper.from_array(np.zeros(1, dtype), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory):
    return _write_model(tmp_path_factory.mktemp("yolo") / "tiny_yolo.onnx", (1, 84, 100), _yolo_output())


def test_letterbox_geometry():
    x, lb = letterbox(np.zeros((*IMAGE_HW, 3), np.uint8), (INPUT, INPUT))
    assert x.shape == (1, 3, INPUT, INPUT) and x.dtype == np.float32
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0.0, 40.0)
    assert np.allclose(x[0, :, :40], 114 / 255) and np.allclose(x[0, :, 40:280], 0)


def test_half_precision_yolo_export(tmp_path):  # ultralytics' half=True: fp16 input and output
    path = _write_model(tmp_path / "half.onnx", (1, 84, 100), _yolo_output(), dtype=np.float16)
    d = YoloDetector(path, threads=1)(np.zeros((*IMAGE_HW, 3), np.uint8))
    assert np.allclose(d.boxes, EXPECTED, atol=0.5) and np.allclose(d.scores, [0.9, 0.6, 0.4], atol=1e-3)


def test_yolo_decoding_and_nms_through_onnxruntime(tiny_yolo):
    det = YoloDetector(tiny_yolo, conf=0.25, iou=0.45, threads=1)
    assert det.size == (INPUT, INPUT)
    d = det(np.zeros((*IMAGE_HW, 3), np.uint8))
    assert np.allclose(d.boxes, EXPECTED, atol=1e-3), d.boxes
    assert np.allclose(d.scores, [0.9, 0.6, 0.4], atol=1e-6)
    # a stricter IoU threshold keeps the overlapping duplicate; a higher score threshold drops the weak box
    assert len(YoloDetector(tiny_yolo, iou=0.9, threads=1)(np.zeros((*IMAGE_HW, 3), np.uint8))) == 4
    assert len(YoloDetector(tiny_yolo, conf=0.5, threads=1)(np.zeros((*IMAGE_HW, 3), np.uint8))) == 2


@pytest.mark.parametrize("kind", ["transposed", "end2end", "two_outputs", "gray_input"])
def test_wrong_layout_detector_is_refused_in_one_line(tmp_path, kind):
    path = tmp_path / f"{kind}.onnx"
    if kind == "transposed":  # [1,N,84]: an export with the rows and columns swapped
        _write_model(path, (1, 8400, 84))
    elif kind == "end2end":  # [1,300,6]: NMS baked in (YOLOv10-style), not the raw layout
        _write_model(path, (1, 300, 6))
    elif kind == "two_outputs":
        _write_model(path, (1, 84, 100), outputs=2)
    else:
        _write_model(path, (1, 84, 100), in_shape=(1, 1, INPUT, INPUT))
    with pytest.raises(SmplerError) as e:
        YoloDetector(path, threads=1)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "[1,4+classes,N]" in msg


def test_wrong_layout_detector_cli_exit_code(tmp_path, capsys):
    from PIL import Image

    from smpler_deploy.cli.run import main

    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(img)
    bad = _write_model(tmp_path / "end2end.onnx", (1, 300, 6))
    assert main([str(img), "-o", str(tmp_path / "out"), "--detector", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "end2end.onnx" in err
    assert not (tmp_path / "out" / "params.npz").exists()


def _photos():
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        grace = np.asarray(im.convert("RGB"))
    # the person's extent, by eye (x, y, w, h): the astronaut's head, suit and arms; Grace Hopper's portrait
    return [("astronaut", data.astronaut(), (110, 0, 360, 512)), ("grace_hopper", grace, (40, 0, 440, 600))]


@pytest.mark.parametrize("name,image,person", _photos(), ids=["astronaut", "grace_hopper"])
def test_builtin_detector_finds_the_person_on_real_photos(name, image, person):
    d = OpenCVDetector()(image)
    assert len(d) >= 1
    assert iou(d.boxes[:1], [person])[0, 0] > 0.4, (name, d.boxes)


def test_builtin_detector_finds_nobody_in_photos_without_people():
    from skimage import data

    det = OpenCVDetector()
    for im in (data.coffee(), data.chelsea(), data.rocket()):
        assert len(det(im)) == 0


def test_boxes_files_json_and_csv(tmp_path):
    j = tmp_path / "b.json"
    j.write_text(json.dumps([{"frame": 0, "bbox": [1, 2, 30, 40], "track": 7},
                             {"frame": 2, "x": 5, "y": 6, "w": 10, "h": 20, "track": 8}]))
    c = tmp_path / "b.csv"
    c.write_text("frame,x,y,w,h\n0,1,2,30,40\n0,50,2,30,40\n3,0,0,10,10\n")
    bj, bc = read_boxes(j), read_boxes(c)
    assert sorted(bj) == [0, 2] and bj[0].track_ids.tolist() == [7] and bj[2].boxes.tolist() == [[5, 6, 10, 20]]
    assert len(bc[0]) == 2 and bc[0].track_ids is None
    det = BoxFileDetector(c)
    img = np.zeros((40, 60, 3), np.uint8)
    assert det(img, 0).boxes.tolist() == [[1, 2, 30, 38], [50, 2, 10, 38]]  # clipped to the frame
    assert len(det(img, 1)) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,2,3\n")
    with pytest.raises(SmplerError, match="bad.csv: cannot read boxes"):
        read_boxes(bad)
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps([{"frame": 0, "bbox": [0, 0, -1, 5]}]))
    with pytest.raises(SmplerError, match="positive width"):
        read_boxes(neg)


def _yolo_standin(out=None, in_shape=(1, 3, INPUT, INPUT), profile=None, out_shape=(1, 84, 100)):
    """The shared strict TensorRT stand-in (tests/trt_standin.py) playing a one-input, one-output YOLO engine:
    executing writes the tiny YOLO output into the output tensor's device buffer."""
    from trt_standin import RecordingCudaStandIn

    from smpler_deploy.runtime.trt_plan import Profile, TensorSpec

    def execute(api):
        x = api.device_buffer("images").view(np.float32)
        assert np.isclose(x.max(), 114 / 255)  # the letterboxed (blank) frame
        api.device_buffer("output0")[:] = np.ascontiguousarray(out).view(np.uint8).reshape(-1)

    fixed = tuple(d if d > 0 else INPUT for d in in_shape)
    return RecordingCudaStandIn(
        io=[TensorSpec("images", True, np.dtype(np.float32), tuple(in_shape)),
            TensorSpec("output0", False, np.dtype(np.float32), tuple(out_shape))],
        profile=profile or Profile(fixed, fixed, fixed), out_shape=lambda name, shapes: out_shape,
        execute=execute if out is not None else None)


def _ultralytics_engine(path, plan: bytes, metadata: dict):
    """An engine file laid out byte for byte as ultralytics' exporter writes it: json.dumps(metadata), its length
    as 4 little-endian signed bytes, the JSON, then the plan."""
    meta = json.dumps(metadata)
    with open(path, "wb") as t:
        t.write(len(meta).to_bytes(4, byteorder="little", signed=True))
        t.write(meta.encode())
        t.write(plan)
    return path


ULTRALYTICS_META = {"description": "Ultralytics YOLO11n model trained on coco.yaml", "author": "Ultralytics",
                    "date": "2026-11-30T10:00:00", "version": "8.3.0", "license": "AGPL-3.0 License",
                    "docs": "https://docs.ultralytics.com", "stride": 32, "task": "detect", "batch": 1,
                    "imgsz": [INPUT, INPUT], "names": {"0": "person", "1": "bicycle", "2": "car"},
                    "args": {"batch": 1, "half": False, "dynamic": False}, "channels": 3}


@pytest.fixture(scope="module")
def yolo_plan(tmp_path_factory):
    pytest.importorskip("tensorrt_rtx")
    from trt_standin import build_plan

    onnx_path = _write_model(tmp_path_factory.mktemp("plan") / "y.onnx", (1, 84, 100), _yolo_output())
    import onnx

    shape = (1, 3, INPUT, INPUT)
    return build_plan(onnx.load(str(onnx_path)), {"images": (shape, shape, shape)})


def test_yolo_engine_through_the_tensorrt_executor(tmp_path, yolo_plan):
    """A plain plan (.engine as TensorRT writes it) runs through the runtime's TensorRT executor; the detector
    frees its stream and buffers on close."""
    eng = tmp_path / "yolo.engine"
    eng.write_bytes(yolo_plan)
    api = _yolo_standin(_yolo_output())
    det = YoloDetector(eng, api=api)
    d = det(np.zeros((*IMAGE_HW, 3), np.uint8))
    assert np.allclose(d.boxes, EXPECTED, atol=1e-3)
    names = api.names()
    assert names[:3] == ["deserialize", "create_context", "stream_create"]
    assert names.index("set_input_shape") < names.index("memcpy_htod") < names.index("execute_async") \
        < names.index("memcpy_dtoh") < names.index("synchronize")
    assert "begin_capture" not in names
    det.close()
    assert not api.live_device and not api.live_host and not api.streams and api.names()[-1] == "release"
    with pytest.raises(SmplerError, match=r"yolo.engine: not a person detector in the YOLO export layout"):
        YoloDetector(eng, api=_yolo_standin(out_shape=(1, 300, 6)))
    bad = tmp_path / "bad.engine"
    bad.write_bytes(yolo_plan[: len(yolo_plan) // 2])  # truncated: the plan header's size disagrees
    with pytest.raises(SmplerError, match="bad.engine: TensorRT could not deserialize"):
        YoloDetector(bad, api=_yolo_standin())


def test_ultralytics_engine_header_is_stripped_and_its_metadata_used(tmp_path, yolo_plan):
    """ultralytics' .engine = 4-byte length + JSON metadata + plan: the header is stripped before deserialize, and
    its imgsz (the input size of an engine with dynamic H/W) and class names (which index is "person") are used."""
    from smpler_deploy.runtime.trt_plan import Profile

    eng = _ultralytics_engine(tmp_path / "yolo11n.engine", yolo_plan, ULTRALYTICS_META)
    det = YoloDetector(eng, api=_yolo_standin(_yolo_output()))
    assert det.size == (INPUT, INPUT) and det.person_class == 0
    assert np.allclose(det(np.zeros((*IMAGE_HW, 3), np.uint8)).boxes, EXPECTED, atol=1e-3)
    det.close()
    # dynamic H/W (ultralytics `dynamic=True`): the size comes from the metadata, inside the engine's profile
    dyn = _yolo_standin(_yolo_output(), in_shape=(1, 3, -1, -1),
                        profile=Profile((1, 3, 160, 160), (1, 3, INPUT, INPUT), (1, 3, 480, 480)))
    det = YoloDetector(eng, api=dyn)
    assert det.size == (INPUT, INPUT)
    assert np.allclose(det(np.zeros((*IMAGE_HW, 3), np.uint8)).boxes, EXPECTED, atol=1e-3)
    assert ("set_input_shape", "images", (1, 3, INPUT, INPUT)) in dyn.calls
    det.close()
    # "person" is where the names say: class 2 here, so the class-0 boxes are no longer persons
    shifted = _ultralytics_engine(tmp_path / "b.engine", yolo_plan,
                                  ULTRALYTICS_META | {"names": {"0": "car", "1": "dog", "2": "person"}})
    det = YoloDetector(shifted, api=_yolo_standin(_yolo_output()))
    assert det.person_class == 2 and len(det(np.zeros((*IMAGE_HW, 3), np.uint8))) == 1  # the 0.7 "other" box
    det.close()
    no_person = _ultralytics_engine(tmp_path / "c.engine", yolo_plan, ULTRALYTICS_META | {"names": {"0": "car"}})
    with pytest.raises(SmplerError, match=r"c.engine: its classes \(car, \.\.\.\) have no 'person'"):
        YoloDetector(no_person, api=_yolo_standin())


@pytest.mark.parametrize("onnx_ok", [True, False])
def test_cli_closes_the_detector_on_success_and_on_error(tmp_path, tiny_yolo, onnx_fp32, monkeypatch, onnx_ok):
    """smpler-run frees the detector (a YOLO one holds an ONNX Runtime session or a TensorRT engine) when the run
    ends, and when a later step (here the SMPLer session) fails."""
    from PIL import Image

    from smpler_deploy.cli.run import main
    from smpler_deploy.pipeline import detect

    opened, closed = [], []
    real_open = detect.open_detector

    def recording_open(*a, **k):
        det = real_open(*a, **k)
        real_close = det.close
        det.close = lambda: closed.append(det) or real_close()
        opened.append(det)
        return det

    monkeypatch.setattr(detect, "open_detector", recording_open)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "img.png")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    rc = main([str(tmp_path / "img.png"), "-o", str(tmp_path / "out"), "--detector", str(tiny_yolo), "--no-overlay",
               "--backend", "onnxruntime", "--onnx", str(onnx_fp32 if onnx_ok else bad), "--threads", "1"])
    assert (rc == 0) == onnx_ok and len(opened) == 1 and closed == opened
