"""API keys: hashing, lookup, development mode; and the API's small parsers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.errors import ApiError
from api.idempotency import fingerprint
from api.routes.animations import decode_cursor, encode_cursor, parse_wait
from stepanim import auth
from stepanim.request import AnimationCreate
from stepanim.settings import DEV_SECRET, DEV_WEBHOOK_SECRET, ApiKeyConfig, Settings

KEY = "sa_" + "k" * 43


def settings(**kw: object) -> Settings:
    keys = [ApiKeyConfig(id="acme-1", tenant="acme", sha256=auth.hash_key(KEY), webhook_secret=None)]
    return Settings(_env_file=None, api_keys=keys, **kw)  # type: ignore[arg-type]


def test_a_configured_key_authenticates_and_only_its_hash_is_kept() -> None:
    s = settings()
    assert KEY not in s.model_dump_json()
    principal = auth.authenticate(s, KEY)
    assert (principal.key_id, principal.tenant) == ("acme-1", "acme")
    for bad in ["sa_wrong", KEY + "x", KEY[:-1], ""]:
        with pytest.raises(auth.AuthError):
            auth.authenticate(s, bad)


def test_no_key_is_refused_unless_development_mode_is_on() -> None:
    with pytest.raises(auth.AuthError):
        auth.authenticate(settings(), None)
    dev = auth.Principal(key_id="dev", tenant="dev", webhook_secret=DEV_WEBHOOK_SECRET)
    assert auth.authenticate(settings(allow_anonymous=True), None) == dev


def test_development_mode_takes_any_key_or_none_and_configured_keys_keep_their_tenant() -> None:
    dev_mode = settings(allow_anonymous=True)
    dev = auth.Principal(key_id="dev", tenant="dev", webhook_secret=DEV_WEBHOOK_SECRET)
    for header in [None, "", "Bearer", "Bearer ", "Bearer sa_whatever", "Basic dTpw", "sa_..."]:
        assert auth.authenticate_header(dev_mode, header) == dev, header
    assert auth.authenticate_header(dev_mode, f"Bearer {KEY}").tenant == "acme"
    for header in [None, "Bearer", "Bearer sa_whatever", "Basic dTpw"]:
        with pytest.raises(auth.AuthError):
            auth.authenticate_header(settings(), header)


def test_bearer_header_parsing() -> None:
    assert auth.parse_bearer(f"Bearer {KEY}") == KEY
    assert auth.parse_bearer(f"bearer   {KEY} ") == KEY
    assert auth.parse_bearer(None) is None
    assert auth.parse_bearer("  ") is None
    for bad in ["Basic abc", "Bearer", "Bearer  ", KEY]:
        with pytest.raises(auth.AuthError):
            auth.parse_bearer(bad)


def test_development_mode_and_dev_secrets_are_refused_in_production() -> None:
    private = {"signing_secret": "x" * 32, "webhook_secret": "whsec_" + "A" * 44}
    Settings(_env_file=None, env="production", **private)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ALLOW_ANONYMOUS"):
        Settings(_env_file=None, env="production", allow_anonymous=True, **private)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, env="production", signing_secret=DEV_SECRET)  # type: ignore[arg-type]


def test_key_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        ApiKeyConfig(id="dev", tenant="t", sha256="0" * 64, webhook_secret=None)  # reserved id
    with pytest.raises(ValidationError):
        ApiKeyConfig(id="a", tenant="t", sha256="not-a-hash", webhook_secret=None)


def test_new_key_command_prints_a_key_that_authenticates(capsys: pytest.CaptureFixture[str]) -> None:
    assert auth.main(["new-key", "--id", "k1", "--tenant", "t1"]) == 0
    out = capsys.readouterr().out
    key = out.split("key (give it to the client; it is not stored): ", 1)[1].split()[0]
    entry = ApiKeyConfig.model_validate_json(out.split("STEPANIM_API_KEYS entry: ", 1)[1])
    s = Settings(_env_file=None, api_keys=[entry])  # type: ignore[arg-type]
    assert auth.authenticate(s, key).tenant == "t1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("wait=5", 5),
        ("respond-async, wait=10", 10),
        ('wait="7"', 7),
        ("WAIT=3; foo", 3),
        ("wait=1000", 60),  # capped at the server's limit
        ("wait=soon", None),  # not understood: ignored (RFC 7240)
        ("return=minimal", None),
    ],
)
def test_prefer_wait(header: str | None, expected: int | None) -> None:
    assert parse_wait(header, limit=60) == expected


def test_fingerprint_is_the_request_not_its_spelling() -> None:
    a = AnimationCreate.model_validate({"prompt": "x", "steps": 20})
    b = AnimationCreate.model_validate_json('{ "steps": 20,  "prompt": "x" }')
    c = AnimationCreate.model_validate({"prompt": "x"})  # 20 is the default
    d = AnimationCreate.model_validate({"prompt": "x", "steps": 21})
    assert fingerprint(a) == fingerprint(b) == fingerprint(c) != fingerprint(d)


def test_cursors_round_trip_and_garbage_is_refused() -> None:
    cursor = (1767323445678, "4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b")
    assert decode_cursor(encode_cursor(cursor)) == cursor
    for bad in ["", "!!!", "1767323445678", "1_xyz", "x_" + "a" * 32, encode_cursor(cursor) + "0"]:
        with pytest.raises(ApiError) as info:
            decode_cursor(bad)
        assert info.value.status == 422 and info.value.message.startswith("cursor:")
