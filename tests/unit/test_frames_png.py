"""The frame writer's PNGs (Pillow's encoder): every pixel read back, as ffmpeg's PNG decoder reads them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.frames import encode_png


@pytest.mark.parametrize("shape", [(1, 1, 3), (16, 16, 3), (17, 31, 3), (64, 48, 3)])
def test_png_round_trips_every_pixel(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(image)))
    decoded.load()  # checks every chunk's CRC and the zlib stream
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(decoded), image)


def test_png_of_a_non_contiguous_view() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)[::2, ::-1]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)]
)
def test_png_refuses_what_it_does_not_write(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_png(bad)
