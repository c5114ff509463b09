"""NaN/Inf: refused per image before any backend runs, raised on outputs by every session (torch and ONNX Runtime
real; TensorRT through the recording stand-in, no GPU here), refused in checkpoints, raw images and boxes."""

import numpy as np
import pytest
import torch

from tiny_smpler import SHAPES, TinySmpler
from trt_standin import RecordingCudaStandIn

from smpler_deploy.errors import SmplerError
from smpler_deploy.outputs import INPUT_NAME, OUTPUT_NAMES, SMPLOutput
from smpler_deploy.runtime.base import NonFiniteError, check_images, check_outputs


def batch(b=4, seed=0):
    return np.random.default_rng(seed).standard_normal((b, 3, 224, 224)).astype(np.float32)


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_check_images_names_every_bad_image():
    x = batch(5)
    x[1, 0, 3, 4] = np.nan
    x[3, 2, 0, 0] = -np.inf
    with pytest.raises(NonFiniteError) as e:
        check_images(x)
    assert e.value.indices == [1, 3] and isinstance(e.value, SmplerError)
    assert "images 1, 3 of the batch of 5" in one_line(e)
    assert check_images(batch(2)).shape == (2, 3, 224, 224)  # finite input passes untouched


def test_check_outputs_names_output_and_items():
    out = SMPLOutput(*(np.zeros((3, *SHAPES[n]), np.float32) for n in OUTPUT_NAMES))
    assert check_outputs(out, "s") is out
    out.betas[2, 4] = np.inf
    with pytest.raises(NonFiniteError) as e:
        check_outputs(out, "s")
    assert e.value.output == "betas" and e.value.indices == [2]
    assert one_line(e) == "s: non-finite values (NaN/Inf) in output betas for batch item 2"


class SqrtJoints(TinySmpler):
    """Finite weights; joints scaled by sqrt(pixel[0,0,0]): NaN exactly for the images whose first pixel is < 0."""

    def forward(self, x):
        outs = list(super().forward(x))
        outs[1] = outs[1] * torch.sqrt(x[:, 0, 0, 0]).reshape(-1, 1, 1)
        return tuple(outs)


class TorchModel(SqrtJoints):
    official_style = False
    info: dict = {}

    def forward(self, x):
        return SMPLOutput(*super().forward(x))


def nan_items_input(b=4):
    x = np.abs(batch(b))
    x[[1, 2], 0, 0, 0] = -1.0  # finite input, NaN joints for items 1 and 2
    return x


def test_torch_session():
    from smpler_deploy.runtime.torch_session import TorchSession

    torch.manual_seed(0)
    s = TorchSession(model=TorchModel().eval())
    assert np.isfinite(s.infer(np.abs(batch(2))).joints).all()
    with pytest.raises(NonFiniteError) as e:
        s.infer(nan_items_input())
    assert e.value.output == "joints" and e.value.indices == [1, 2]
    assert "torch session" in one_line(e)
    bad = batch(2)
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(NonFiniteError) as e:
        s.infer(bad)
    assert e.value.indices == [0] and e.value.output is None


@pytest.fixture(scope="module")
def sqrt_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("nonfinite") / "sqrt.onnx"
    torch.manual_seed(0)
    dyn = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    torch.onnx.export(SqrtJoints().eval(), (torch.ones(2, 3, 224, 224),), str(path), input_names=[INPUT_NAME],
                      output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, dynamo=False, opset_version=19)
    return path


def test_onnxruntime_session(sqrt_onnx):
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    s = OnnxRuntimeSession(sqrt_onnx, threads=1)
    assert np.isfinite(s.infer(np.abs(batch(2))).joints).all()
    with pytest.raises(NonFiniteError) as e:
        s.infer(nan_items_input())
    assert e.value.output == "joints" and e.value.indices == [1, 2]
    assert "onnxruntime session" in one_line(e)
    # a NaN pixel is refused by name before ONNX Runtime runs (it used to lose the whole batch to a raw ORT error)
    x = np.abs(batch(3))
    x[2, 0, 100, 100] = np.nan
    ran = []
    real_run = s.sess.run
    s.sess = type("Recording", (), {"run": lambda self, *a, **k: ran.append(1) or real_run(*a, **k)})()
    with pytest.raises(NonFiniteError) as e:
        s.infer(x)
    assert e.value.indices == [2] and not ran


class NaNJointsStandIn(RecordingCudaStandIn):
    """Device->host copy of a batch of 2 puts a NaN into the second item of `joints` (no GPU here)."""

    def memcpy_dtoh(self, dst, src, n, stream):
        super().memcpy_dtoh(dst, src, n, stream)
        per_item = int(np.prod(SHAPES["joints"]))
        if n == 2 * per_item * 4:
            self.live_host[dst][:n].view(np.float32)[per_item + 5] = np.nan


def test_tensorrt_session(engine):
    from smpler_deploy.runtime.tensorrt import TensorRTSession

    api = NaNJointsStandIn()
    s = TensorRTSession(engine, api=api, cuda_graphs=False)
    assert np.isfinite(s.infer(batch(1)).joints).all()
    with pytest.raises(NonFiniteError) as e:
        s.infer(batch(2))
    assert e.value.output == "joints" and e.value.indices == [1] and engine.name in one_line(e)
    api.calls.clear()
    x = batch(2)
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError) as e:
        s.infer(x)
    assert e.value.indices == [0] and api.calls == []  # refused before any TensorRT/CUDA call
    s.close()


def test_checkpoint_with_nan_weight_refused(tmp_path):
    from smpler_deploy.model.checkpoint import read_checkpoint

    sd = {"a.weight": torch.ones(3), "b.num_batches_tracked": torch.tensor(2), "c.bias": torch.ones(4)}
    torch.save(sd, tmp_path / "ok.pt")
    assert set(read_checkpoint(tmp_path / "ok.pt")) == set(sd)
    sd["c.bias"][2] = float("nan")
    sd["a.weight"][0] = float("inf")
    torch.save({"model": sd}, tmp_path / "nan.pt")
    with pytest.raises(SmplerError) as e:
        read_checkpoint(tmp_path / "nan.pt")
    assert one_line(e) == (f"checkpoint {tmp_path / 'nan.pt'}: non-finite weights (NaN/Inf) in a.weight "
                           "(1 values) and 1 more parameters")


def test_raw_image_and_bbox_refused():
    from smpler_deploy.cli.demo import parse_bbox
    from smpler_deploy.preprocess import box_transform, crop_person, load_image

    img = np.random.default_rng(0).random((40, 30, 3)).astype(np.float32)
    assert load_image(img).dtype == np.uint8
    img[5, 5, 1] = np.nan
    with pytest.raises(SmplerError, match="1 non-finite pixel values"):
        crop_person(img)
    for box in ((np.nan, 0, 10, 10), (0, 0, np.inf, 10), (0, -np.inf, 10, 10), (0, 0, 10, np.nan)):
        with pytest.raises(SmplerError, match="expected finite numbers"):
            box_transform((40, 30), box)
    for text in ("nan,0,10,10", "0,0,inf,10", "0,0,10,-Infinity"):
        with pytest.raises(SmplerError, match=f"--bbox {text}: expected finite numbers"):
            parse_bbox(text)
    assert parse_bbox("1,2,3,4") == (1, 2, 3, 4)


def test_run_skips_frames_with_nonfinite_outputs(sqrt_onnx):
    """smpler-run's loop on the real ORT session: a frame whose crop gives NaN joints loses its people with a
    warning; the other frames (in the same session call) keep theirs and every frame is still written."""
    from smpler_deploy.pipeline.detect import Detections
    from smpler_deploy.pipeline.runner import RunConfig, run
    from smpler_deploy.pipeline.video import Frame, ImageSource
    from smpler_deploy.runtime.ort_session import OnnxRuntimeSession

    shades = [255, 0, 255, 0]  # crop pixel 0 below the ImageNet mean -> sqrt(negative) -> NaN joints

    class Frames(ImageSource):
        def __iter__(self):
            for i, v in enumerate(shades):
                yield Frame(i, np.full((60, 80, 3), v, np.uint8), f"f{i}.png")

    def whole_image(image, frame_index=0):
        return Detections(np.array([[20.0, 15, 40, 30]]), np.ones(1))  # its crop (x1.2 margin) lies inside

    logs, written = [], []
    people, times = run(Frames([], "test"), whole_image, OnnxRuntimeSession(sqrt_onnx, threads=1),
                        config=RunConfig(max_batch=4, overlay=False, track=False),
                        on_frame=lambda f, ov, pp: written.append((f.index, len(pp))), log=logs.append)
    assert sorted(written) == [(0, 1), (1, 0), (2, 1), (3, 0)]
    assert sorted(p.frame for p in people) == [0, 2] and all(np.isfinite(p.rotmat).all() for p in people)
    warn = [m for m in logs if m.startswith("warning:")]
    assert len(warn) == 2 and "frame 1 (f1.png)" in warn[0] and "model output joints" in warn[0]
    assert "frame 3 (f3.png)" in warn[1]


def test_run_boxes_nonfinite(tmp_path):
    from smpler_deploy.pipeline.crops import person_crops
    from smpler_deploy.pipeline.detect import read_boxes

    (tmp_path / "b.json").write_text('[{"frame": 0, "bbox": [1, 2, 30, 40]}, {"frame": 1, "bbox": [NaN, 2, 30, 40]}]')
    (tmp_path / "b.csv").write_text("frame,x,y,w,h\n0,1,2,30,40\n3,1,2,inf,40\n")
    for f, frame in (("b.json", 1), ("b.csv", 3)):
        with pytest.raises(SmplerError) as e:
            read_boxes(tmp_path / f)
        assert one_line(e).startswith(f"boxes {tmp_path / f}: frame {frame} box ") and "finite" in str(e.value)
    # a detector's NaN box carries no person: dropped like a degenerate one, the others are cropped
    crops, transforms, keep = person_crops(np.zeros((60, 80, 3), np.uint8),
                                           [[1, 2, 30, 40], [np.nan, 2, 30, 40], [1, 2, 30, np.inf]])
    assert keep.tolist() == [0] and crops.shape == (1, 3, 224, 224) and np.isfinite(crops).all()
