"""``runtime.images.to_rgb_array``: the file formats and limits a deployment meets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.images import ImageError, to_rgb_array

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I", ".tif")])
def test_high_bit_depth_grayscale_is_scaled_not_clipped(tmp_path, mode, suffix):
    values = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    path = tmp_path / f"gray16{suffix}"
    image = Image.fromarray(values)
    (image if mode == "I;16" else image.convert("I")).save(path)
    with Image.open(path) as opened:
        assert opened.mode == mode
    rgb = to_rgb_array(path)
    expected = np.rint(values * (255 / 65535)).astype(np.uint8)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], expected)  # not all white (Pillow's clip)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_decompression_bomb_is_a_clear_image_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)  # 100x100 > 2x the limit
    with pytest.raises(ImageError, match=r"big\.png: image is larger than Pillow's limit"):
        to_rgb_array(path)
