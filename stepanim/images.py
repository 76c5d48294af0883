"""Checking init images (img2img) before they are stored or used. Pure functions.

The API checks every image it accepts (``POST /uploads`` and base64 in a job) with
:func:`inspect_image`, so a bad one is refused with a 4xx and never stored; the render
worker opens the stored bytes again with :func:`open_rgb`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIN_SIDE = 8

ImageProblem = Literal["too_large", "unsupported_type", "bad_dimensions", "corrupt", "bad_encoding"]
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(;[\w-]+=[^;,]*)*;base64,", re.IGNORECASE)


class ImageError(ValueError):
    """An init image was refused; ``problem`` says why (the API maps it to a status code)."""

    def __init__(self, problem: ImageProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    size_bytes: int


def decode_base64(data: str, *, max_bytes: int) -> bytes:
    """The bytes of a base64 string or ``data:...;base64,`` URL, refusing more than ``max_bytes``."""
    text = _DATA_URL.sub("", data.strip(), count=1)
    text = "".join(text.split())  # line breaks are common in pasted base64
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ImageError("too_large", f"image is larger than this server's limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("bad_encoding", f"not valid base64: {e}") from e


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a whole PNG, JPEG or WebP image within the limits; raise :class:`ImageError`."""
    if len(data) > max_bytes:
        raise ImageError("too_large", f"image is larger than this server's limit of {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError("bad_dimensions", f"image has too many pixels (limit {max_pixels})") from e
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError("unsupported_type", "not an image; send PNG, JPEG or WebP") from e
    with image:
        if image.format not in FORMATS:
            raise ImageError("unsupported_type", f"{image.format} images are not accepted; send PNG, JPEG or WebP")
        width, height = image.size
        if width < MIN_SIDE or height < MIN_SIDE:
            raise ImageError("bad_dimensions", f"image is {width}x{height}; each side must be at least {MIN_SIDE}")
        if width * height > max_pixels:
            raise ImageError(
                "bad_dimensions", f"image is {width}x{height}, above this server's limit of {max_pixels} pixels"
            )
        try:
            image.load()  # decodes everything: a truncated or corrupt file fails here
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError("corrupt", f"the {image.format} image cannot be decoded: {e}") from e
        return ImageInfo(content_type=FORMATS[image.format], width=width, height=height, size_bytes=len(data))


def open_rgb(data: bytes, *, width: int, height: int) -> Image.Image:
    """The image as RGB at exactly ``width`` x ``height``: EXIF rotation applied, scaled to cover, centre-cropped."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
        return ImageOps.fit(upright.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)
