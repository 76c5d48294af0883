"""Signed downloads from the local storage backend (the embedded default)."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from api.deps import ServicesDep
from api.errors import ApiError, ErrorResponse
from stepanim import signing
from stepanim.storage import LocalStorage, StorageError, content_disposition

router = APIRouter(tags=["files"])


@router.get(
    "/files/{key:path}",
    summary="Download a file",
    response_class=FileResponse,
    responses={403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
def download(
    *,
    key: Annotated[
        str, Path(description="Storage key of the file.", examples=["jobs/4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b/video.mp4"])
    ],
    expires: Annotated[
        str,
        Query(
            pattern=r"^[0-9]{1,12}$", description="Unix time after which the link is refused.", examples=["1767326045"]
        ),
    ],
    signature: Annotated[
        str,
        Query(
            pattern=r"^[0-9a-f]{64}$",
            description="Hex HMAC-SHA256 of the key and expiry.",
            examples=["3f1c0e5b9a7d2c4e6f8a0b1c2d3e4f5a3f1c0e5b9a7d2c4e6f8a0b1c2d3e4f5a"],
        ),
    ],
    svc: ServicesDep,
) -> FileResponse:
    """Serve a stored object through a signed, expiring link made by the service."""
    storage = svc.storage
    if not isinstance(storage, LocalStorage):
        raise ApiError(404, "not_found", "this server stores files in S3; use the presigned URL")
    try:
        signing.verify(svc.settings.signing_secret, key, expires, signature)
        path = storage.path_for(key)
    except (signing.LinkError, StorageError) as e:
        raise ApiError(403, "forbidden", f"download link refused: {e}") from e
    if not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    name = PurePosixPath(key).name
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Content-Disposition": content_disposition(name)})
