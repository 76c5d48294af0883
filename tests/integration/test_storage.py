"""Both storage backends against real servers/folders."""

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from stepanim.settings import Settings
from stepanim.storage import LocalStorage, NotFound, S3Storage, Storage, StorageError
from tests.conftest import S3Server


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store", secret="s" * 16, base_url="http://api", ttl_seconds=60)
    s3: S3Server = request.getfixturevalue("s3")
    return S3Storage(s3.settings_object())


def test_round_trip(storage: Storage, tmp_path: Path) -> None:
    storage.ping()
    storage.put_bytes("jobs/a/frames/1.png", b"one", "image/png")
    source = tmp_path / "src.bin"
    source.write_bytes(b"two")
    storage.put_file("jobs/a/videos/v.mp4", source, "video/mp4")
    assert storage.get_bytes("jobs/a/frames/1.png") == b"one"
    storage.download("jobs/a/videos/v.mp4", tmp_path / "dl")
    assert (tmp_path / "dl").read_bytes() == b"two"
    assert storage.exists("jobs/a/frames/1.png")
    assert storage.list_keys("jobs/a/") == ["jobs/a/frames/1.png", "jobs/a/videos/v.mp4"]
    storage.delete(["jobs/a/frames/1.png"])
    assert not storage.exists("jobs/a/frames/1.png")
    with pytest.raises(NotFound):
        storage.get_bytes("jobs/a/frames/1.png")


def test_overwrite_is_idempotent(storage: Storage) -> None:
    storage.put_bytes("jobs/b/x", b"1", "text/plain")
    storage.put_bytes("jobs/b/x", b"2", "text/plain")
    assert storage.get_bytes("jobs/b/x") == b"2"
    assert storage.list_keys("jobs/b/") == ["jobs/b/x"]


def test_list_does_not_match_a_longer_prefix(storage: Storage) -> None:
    storage.put_bytes("jobs/ab/x", b"1", "text/plain")
    storage.put_bytes("jobs/a/x", b"1", "text/plain")
    assert storage.list_keys("jobs/a/") == ["jobs/a/x"]


def test_local_refuses_keys_outside_its_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store", secret="s" * 16, base_url="http://api", ttl_seconds=60)
    for key in ["../escape", "/etc/passwd", "a/../../b", "", ".", "a/..", "jobs/x\0.png"]:
        with pytest.raises(StorageError):
            storage.put_bytes(key, b"x", "text/plain")


def test_s3_presigned_url_parameters_and_download(s3: S3Server) -> None:
    storage = S3Storage(s3.settings_object(url_ttl_seconds=600))
    storage.put_bytes("jobs/c/v.mp4", b"video", "video/mp4")
    url = storage.signed_url("jobs/c/v.mp4", filename='7-a "cat" ✨.mp4')
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "X-Amz-Signature" in query
    assert "filename*=UTF-8''7-a%20%22cat%22%20%E2%9C%A8.mp4" in query["response-content-disposition"][0]
    assert httpx.get(url).content == b"video"


def test_s3_down_is_a_storage_error() -> None:
    settings = Settings(
        _env_file=None,
        storage_backend="s3",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_access_key_id="k",
        s3_secret_access_key="k",
    )
    with pytest.raises(StorageError):
        S3Storage(settings).ping()
