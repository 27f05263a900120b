import numpy as np
import pytest
from PIL import Image

from pst_core.errors import InputError
from pst_core.load import read_image, resize, working_shape


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16"])
def test_modes_decode_to_rgb_float(tmp_path, mode):
    base = Image.fromarray((np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8))
    if mode == "I;16":  # a real 16-bit image, full range
        img = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16))
    else:
        img = base.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    pixels = read_image(path)
    assert pixels.shape == (3, 12, 10) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0 and pixels.std() > 0.01


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "text.png")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="max_pixels"):
        read_image(tmp_path / "full.png", max_pixels=100)


def test_working_shape_keeps_aspect():
    assert working_shape(300, 600, 128) == (64, 128)
    assert working_shape(600, 300, 128) == (128, 64)
    out = resize(np.random.default_rng(0).random((3, 300, 600)).astype(np.float32), (64, 128))
    assert out.shape == (3, 64, 128)
