"""Object storage: one small interface, two backends.

``S3Storage`` talks to any S3-compatible server through boto3 (AWS, MinIO, R2, moto);
``LocalStorage`` keeps objects under a folder and hands out HMAC-signed, expiring
links that the API serves at ``/files/<key>``. Backend errors surface as
:class:`StorageError` (with ``NotFound`` for a missing key).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from stepanim import signing
from stepanim.settings import Settings


class StorageError(Exception):
    """Storage could not be reached or refused the operation."""


class NotFound(StorageError):
    """No object under that key."""


class Storage(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...
    def put_file(self, key: str, path: Path, content_type: str) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, keys: list[str]) -> None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def signed_url(self, key: str, *, filename: str | None = None) -> str: ...
    def ping(self) -> None: ...


def content_disposition(filename: str) -> str:
    # RFC 6266 / 5987: an ASCII fallback plus the exact UTF-8 name.
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


class LocalStorage:
    def __init__(self, root: Path, *, secret: str, base_url: str, ttl_seconds: int) -> None:
        self.root = root.resolve()
        self._prefix = f"{self.root}{os.sep}"
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl_seconds = ttl_seconds

    def path_for(self, key: str) -> Path:
        return Path(self._path(key))

    def _path(self, key: str) -> str:
        # Lexical (no file system calls: a frame per step is written through here): keys are
        # made by this service, and no key with ``..``, a leading ``/`` or a NUL gets out.
        path = os.path.normpath(self._prefix + key)
        if not key or key.startswith("/") or "\0" in key or not path.startswith(self._prefix):
            raise StorageError(f"key outside storage: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        # Write then rename: a reader never sees half an object. Plain os calls, and the folder
        # made only when missing: the render worker writes a frame per step from a thread
        # that shares the interpreter with the sampler.
        path = self._path(key)
        folder = os.path.dirname(path)
        tmp = f"{folder}{os.sep}.tmp-{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        try:
            with memoryview(data) as view:
                while view:
                    view = view[os.write(fd, view) :]
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(key) from e

    def download(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self.path_for(key), path)
        except FileNotFoundError as e:
            raise NotFound(key) from e

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.path_for(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        folder = base if prefix.endswith("/") else base.parent
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".tmp-"))

    def signed_url(self, key: str, *, filename: str | None = None) -> str:
        path = signing.signed_path(self.secret, key, self.ttl_seconds)
        return f"{self.base_url}{path}"

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"storage folder not writable: {self.root}")


class S3Storage:
    def __init__(self, settings: Settings, *, client: Any = None, public_client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        common: dict[str, Any] = {
            "region_name": settings.s3_region,
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key,
            "config": config,
        }
        self.bucket = settings.s3_bucket
        self.ttl_seconds = settings.url_ttl_seconds
        self.client = client or boto3.client("s3", endpoint_url=settings.s3_endpoint_url, **common)
        public_endpoint = settings.s3_public_endpoint_url
        self.public_client = public_client or (
            boto3.client("s3", endpoint_url=public_endpoint, **common) if public_endpoint else self.client
        )

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(kwargs.get("Key", "")) from e
            raise StorageError(f"S3 {method} failed: {code or e}") from e
        except BotoCoreError as e:
            raise StorageError(f"S3 {method} failed: {e}") from e

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._call("put_object", Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        with path.open("rb") as f:
            self._call("put_object", Key=key, Body=f, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        body = self._call("get_object", Key=key)["Body"]
        data: bytes = body.read()
        return data

    def download(self, key: str, path: Path) -> None:
        path.write_bytes(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=key)
        except NotFound:
            return False
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self._call("delete_objects", Delete={"Objects": chunk, "Quiet": True})

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=prefix, **token)
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def signed_url(self, key: str, *, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        url: str = self.public_client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.ttl_seconds)
        return url

    def ping(self) -> None:
        self._call("head_bucket")


def make_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(
        settings.local_storage_dir,
        secret=settings.signing_secret,
        base_url=settings.public_base_url,
        ttl_seconds=settings.url_ttl_seconds,
    )
