"""Init image checks (stepanim.images): what is accepted, and why anything else is refused."""

from __future__ import annotations

import base64
import io
import zlib

import numpy as np
import pytest
from PIL import Image

from stepanim.images import ImageError, decode_base64, inspect_image, open_rgb

LIMITS = {"max_bytes": 4 * 2**20, "max_pixels": 512 * 512}


def encoded(fmt: str, size: tuple[int, int] = (40, 24), **save: object) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepts_png_jpeg_webp(fmt: str, content_type: str) -> None:
    data = encoded(fmt)
    info = inspect_image(data, **LIMITS)
    assert (info.content_type, info.width, info.height, info.size_bytes) == (content_type, 40, 24, len(data))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (encoded("GIF"), "unsupported_type"),
        (encoded("BMP"), "unsupported_type"),
        (b"<html>not an image</html>", "unsupported_type"),
        (b"", "unsupported_type"),
        (encoded("PNG", (4, 64)), "bad_dimensions"),
        (encoded("PNG", (600, 600)), "bad_dimensions"),
        (encoded("PNG", (64, 64))[:-200], "corrupt"),
        (encoded("JPEG", (64, 64))[:-1000], "corrupt"),
    ],
    ids=["gif", "bmp", "html", "empty", "too-small", "too-many-pixels", "truncated-png", "truncated-jpeg"],
)
def test_refuses_with_a_reason(data: bytes, problem: str) -> None:
    with pytest.raises(ImageError) as caught:
        inspect_image(data, **LIMITS)
    assert caught.value.problem == problem
    assert str(caught.value)


def test_refuses_too_many_bytes() -> None:
    data = encoded("PNG", (256, 256))
    with pytest.raises(ImageError) as caught:
        inspect_image(data, max_bytes=len(data) - 1, max_pixels=LIMITS["max_pixels"])
    assert caught.value.problem == "too_large"


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    small = encoded("PNG", (8, 8))
    # Claim 30000 x 30000 pixels in the header (with a valid CRC): Pillow's bomb check fires on open.
    ihdr = b"IHDR" + (30000).to_bytes(4, "big") * 2 + small[24:29]
    bomb = small[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + small[33:]
    with pytest.raises(ImageError) as caught:
        inspect_image(bomb, max_bytes=2**20, max_pixels=2**40)
    assert caught.value.problem == "bad_dimensions"


def test_decode_base64_plain_and_data_url() -> None:
    data = encoded("PNG")
    text = base64.b64encode(data).decode()
    assert decode_base64(text, max_bytes=2**20) == data
    assert decode_base64(f"data:image/png;base64,{text}", max_bytes=2**20) == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME-style line breaks
    assert decode_base64(wrapped, max_bytes=2**20) == data


@pytest.mark.parametrize("text", ["not base64!", "QUJD=x", "data:image/png;base64,@@@@"])
def test_decode_base64_refuses_garbage(text: str) -> None:
    with pytest.raises(ImageError) as caught:
        decode_base64(text, max_bytes=2**20)
    assert caught.value.problem == "bad_encoding"


def test_decode_base64_refuses_too_large_before_decoding() -> None:
    with pytest.raises(ImageError) as caught:
        decode_base64("A" * 4000, max_bytes=1000)
    assert caught.value.problem == "too_large"


def test_open_rgb_covers_and_crops_to_the_requested_size() -> None:
    # Left half red, right half blue, 200x100: covering 64x64 keeps the middle, half red, half blue.
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100, 0] = 255
    pixels[:, 100:, 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGBA").save(buffer, format="PNG")
    image = open_rgb(buffer.getvalue(), width=64, height=64)
    assert image.mode == "RGB"
    assert image.size == (64, 64)
    out = np.asarray(image)
    assert out[32, 5, 0] > 200 and out[32, 58, 2] > 200


def test_open_rgb_applies_exif_rotation() -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    # Upright it is 20 wide and 40 high: covering 16x32 needs no crop, so nothing of it is lost.
    assert open_rgb(buffer.getvalue(), width=16, height=32).size == (16, 32)
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (40, 20)
