from urllib.parse import parse_qs, urlsplit

import pytest

from stepanim import signing

SECRET = "a-secret-for-tests-only"


def _parts(path: str) -> tuple[str, str, str]:
    split = urlsplit(path)
    query = parse_qs(split.query)
    return split.path.removeprefix("/files/"), query["expires"][0], query["signature"][0]


def test_valid_link_verifies() -> None:
    key, expires, sig = _parts(signing.signed_path(SECRET, "jobs/a/x.mp4", 60, now=1000))
    assert key == "jobs/a/x.mp4"
    signing.verify(SECRET, key, expires, sig, now=1059)


def test_expired_link_is_refused() -> None:
    key, expires, sig = _parts(signing.signed_path(SECRET, "k", 60, now=1000))
    with pytest.raises(signing.LinkError, match="expired"):
        signing.verify(SECRET, key, expires, sig, now=1061)


@pytest.mark.parametrize("field", ["key", "expires", "signature", "secret"])
def test_tampered_link_is_refused(field: str) -> None:
    key, expires, sig = _parts(signing.signed_path(SECRET, "jobs/a/x.mp4", 60, now=1000))
    values = {"key": key, "expires": expires, "signature": sig, "secret": SECRET}
    values[field] = {
        "key": "jobs/b/x.mp4",
        "expires": str(int(expires) + 3600),
        "signature": "0" * 64,
        "secret": "another-secret-value",
    }[field]
    with pytest.raises(signing.LinkError):
        signing.verify(values["secret"], values["key"], values["expires"], values["signature"], now=1000)


def test_malformed_expiry_is_refused() -> None:
    with pytest.raises(signing.LinkError, match="malformed"):
        signing.verify(SECRET, "k", "soon", "x")
