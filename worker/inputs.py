"""A job's inputs as the pipeline takes them: the init image of img2img."""

from __future__ import annotations

from PIL import Image

from stepanim.failures import InvalidInput
from stepanim.images import ImageError, decode_base64, inspect_image, open_rgb
from stepanim.naming import upload_key
from stepanim.request import InitImage
from stepanim.settings import Settings
from stepanim.storage import NotFound, Storage


def load_init_image(init: InitImage, storage: Storage, settings: Settings, *, width: int, height: int) -> Image.Image:
    """The init image as RGB at ``width`` x ``height`` (scaled to cover, centre-cropped).

    The API stores base64 images as uploads before a job is queued; ``data`` is still
    read here so that a job written by another producer works too. The bytes are checked
    again: storage is not trusted to hold what the API checked.
    """
    if init.upload_id is not None:
        try:
            data = storage.get_bytes(upload_key(init.upload_id))
        except NotFound as e:
            raise InvalidInput(
                f"init_image.upload_id: no upload with id {init.upload_id!r} (expired or deleted?)"
            ) from e
    else:
        assert init.data is not None  # InitImage holds exactly one of the two
        try:
            data = decode_base64(init.data, max_bytes=settings.max_upload_bytes)
        except ImageError as e:
            raise InvalidInput(f"init_image.data: {e}") from e
    try:
        inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels)
    except ImageError as e:
        raise InvalidInput(f"init_image: {e}") from e
    return open_rgb(data, width=width, height=height)
