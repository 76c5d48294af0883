"""/uploads: init images for img2img, sent as multipart so that POST /animations stays JSON."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ServicesDep
from api.errors import AUTH_RESPONSES, ApiError, ErrorResponse
from stepanim.images import FORMATS, ImageError, ImageInfo, decode_base64, inspect_image
from stepanim.naming import upload_key
from stepanim.request import AnimationCreate, InitImage
from stepanim.services import Services
from stepanim.ssrf import FetchError, safe_get

router = APIRouter(prefix="/uploads", tags=["uploads"])

_STATUS = {"too_large": 413, "unsupported_type": 415}
_CODE = {"too_large": "payload_too_large", "unsupported_type": "unsupported_media_type"}


class UploadPublic(BaseModel):
    """A stored init image; reference it as `{"init_image": {"upload_id": ...}}` in POST /animations."""

    id: str = Field(
        description="Upload id to use as init_image.upload_id.", examples=["9b2f0c1a2b3c4d4e5f8a9b0c1d2e3f4a"]
    )
    content_type: str = Field(description="The image type, read from its content.", examples=["image/png"])
    width: int = Field(description="Width in pixels.", examples=[512])
    height: int = Field(description="Height in pixels.", examples=[512])
    size_bytes: int = Field(description="Size of the file in bytes.", examples=[48213])


def _refuse(e: ImageError, field: str) -> ApiError:
    return ApiError(_STATUS.get(e.problem, 422), _CODE.get(e.problem, "invalid_image"), f"{field}: {e}")


def store_image(svc: Services, data: bytes, *, field: str, tenant: str) -> tuple[str, ImageInfo]:
    """Check ``data`` and store it as a new upload of ``tenant``; a refused image is not stored."""
    settings = svc.settings
    try:
        info = inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels)
    except ImageError as e:
        raise _refuse(e, field) from e
    upload_id = uuid.uuid4().hex
    svc.storage.put_bytes(upload_key(upload_id), data, info.content_type)
    svc.store.set_upload_owner(upload_id, tenant)
    return upload_id, info


def prepare_init_image(body: AnimationCreate, svc: Services, *, tenant: str) -> AnimationCreate:
    """Resolve a job's init image before the job is stored.

    An ``upload_id`` must name a stored upload (else 422); base64 ``data``, or the image at
    ``url`` (fetched through the SSRF guard), is checked and stored as an upload, and the
    job keeps only its id, so job records stay small.
    """
    init = body.init_image
    if init is None:
        return body
    if init.upload_id is not None:
        # Another tenant's upload, or one older than a job lives, is "no upload" here.
        if svc.store.upload_owner(init.upload_id) != tenant or not svc.storage.exists(upload_key(init.upload_id)):
            raise ApiError(422, "invalid_request", f"init_image.upload_id: no upload with id {init.upload_id!r}")
        return body
    if init.url is not None:
        field = "init_image.url"
        try:
            data = safe_get(
                str(init.url),
                max_bytes=svc.settings.max_upload_bytes,
                allowed_content_types=list(FORMATS.values()),
                allow_hosts=svc.settings.outbound_allow,
                timeout=svc.settings.init_image_fetch_timeout_seconds,
            )
        except FetchError as e:
            raise ApiError(422, "invalid_image", f"{field}: {e}") from e
    else:
        assert init.data is not None  # InitImage holds exactly one of the three
        field = "init_image.data"
        try:
            data = decode_base64(init.data, max_bytes=svc.settings.max_upload_bytes)
        except ImageError as e:
            raise _refuse(e, field) from e
    upload_id, _ = store_image(svc, data, field=field, tenant=tenant)
    return body.model_copy(update={"init_image": InitImage(upload_id=upload_id)})


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadPublic,
    responses={
        **AUTH_RESPONSES,
        400: {"model": ErrorResponse, "description": "The body is not valid multipart/form-data."},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
def create_upload(
    *,
    file: Annotated[
        UploadFile,
        File(description="A PNG, JPEG or WebP image (multipart/form-data field `file`).", examples=["(binary)"]),
    ],
    svc: ServicesDep,
    principal: PrincipalDep,  # uploads need an API key like every other write
) -> UploadPublic:
    """Store an init image for img2img.

    The image is checked (type from its content, not its name; size; dimensions) and
    stored; the response's `id` goes into POST /animations as
    `{"init_image": {"upload_id": "<id>"}}` (by the same tenant, within 7 days). A refused
    image is not stored: 413 when the file is too large, 415 when it is not PNG, JPEG or
    WebP, 422 when its dimensions are out of range or it cannot be decoded.
    """
    limit = svc.settings.max_upload_bytes
    data = file.file.read(limit + 1)  # a sync route: FastAPI runs it in a thread, storage calls block
    upload_id, info = store_image(svc, data, field="file", tenant=principal.tenant)
    return UploadPublic(
        id=upload_id, content_type=info.content_type, width=info.width, height=info.height, size_bytes=info.size_bytes
    )
