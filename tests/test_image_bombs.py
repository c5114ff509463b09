"""Decompression bombs: a small PNG whose header claims a huge size is refused from the header, in one line naming
the file, by the one image reader every command uses (smpler-demo, --calib, smpler-run's image directories)."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from smpler_deploy import preprocess
from smpler_deploy.errors import SmplerError
from smpler_deploy.preprocess import MAX_IMAGE_PIXELS, ImageTooLargeError, open_image


def png_header(path, w, h):
    """A ~100-byte 1-bit grayscale PNG claiming w x h pixels (only the header is valid; nothing to decode)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("side", [20000, 10000])  # PIL's DecompressionBombError / only its warning (100 Mpx)
def test_bomb_refused_from_header(tmp_path, side):
    bomb = png_header(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError) as e:
        open_image(bomb)
    assert str(bomb) in one_line(e) and ("bomb" in one_line(e))


def test_pil_warning_is_an_error(tmp_path, monkeypatch):
    # PIL's own (lowered) limit warns between 1x and 2x of it; that warning refuses the image too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    img = tmp_path / "warn.png"
    Image.new("RGB", (40, 30)).save(img)  # 1200 px: PIL warns (over 1000, under 2000)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        open_image(img)


def test_own_limit_and_normal_images(tmp_path, monkeypatch):
    img = tmp_path / "small.png"
    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(img)
    assert open_image(img).shape == (30, 40, 3)
    assert MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS * 2  # refused before PIL's hard error would fire
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError) as e:
        open_image(img)
    assert one_line(e) == f"{img}: image of 40x30 = 0 Mpx exceeds the 0 Mpx limit (decompression bomb?); refused"
    with pytest.raises(SmplerError, match="cannot read image"):
        open_image(png_header(tmp_path / "broken.png", 0, 5))


def test_demo_refuses_bomb(tmp_path, capsys):
    from smpler_deploy.cli.demo import main

    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)
    out = tmp_path / "o.png"
    assert main([str(bomb), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bomb}: ") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]  # nothing written


def test_calibration_refuses_bomb_instead_of_skipping(tmp_path):
    from smpler_deploy.export.int8 import load_calibration_dir

    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(tmp_path / "a.png")
    assert load_calibration_dir(tmp_path).shape == (1, 3, 224, 224)
    (tmp_path / "b.png").write_bytes(b"not an image")  # unreadable files are still skipped
    assert load_calibration_dir(tmp_path).shape == (1, 3, 224, 224)
    bomb = png_header(tmp_path / "c.png", 20000, 20000)
    with pytest.raises(ImageTooLargeError) as e:
        load_calibration_dir(tmp_path)
    assert str(bomb) in one_line(e)


def test_run_image_source_refuses_bomb(tmp_path):
    from smpler_deploy.pipeline.video import ImageSource

    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(tmp_path / "0.png")
    bomb = png_header(tmp_path / "1.png", 20000, 20000)
    frames = iter(ImageSource([tmp_path / "0.png", bomb], str(tmp_path)))
    assert next(frames).image.shape == (30, 40, 3)
    with pytest.raises(ImageTooLargeError, match=str(bomb)):
        next(frames)
