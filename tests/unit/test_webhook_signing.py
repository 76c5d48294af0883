"""The project's verifier (stepanim.webhook_signing.verify, used by `stepanim webhook verify`), checked
against the specification's vector and the independent verifier in tests/standard_webhooks.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stepanim import webhook_signing, webhooks
from tests import standard_webhooks
from tests.unit.test_webhooks import VECTOR_BODY, VECTOR_ID, VECTOR_SECRET, VECTOR_SIGNATURE, VECTOR_TS

HEADERS = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}


def test_accepts_the_specification_vector_with_any_header_case() -> None:
    webhook_signing.verify(VECTOR_SECRET, HEADERS, VECTOR_BODY, now=VECTOR_TS + 10)
    upper = {k.upper(): v for k, v in HEADERS.items()}
    webhook_signing.verify([webhooks.new_secret(), VECTOR_SECRET], upper, VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize(
    ("body", "extra", "now", "reason"),
    [
        (VECTOR_BODY + b" ", {}, VECTOR_TS, "no signature matches"),
        (VECTOR_BODY, {"webhook-id": "msg_other"}, VECTOR_TS, "no signature matches"),
        (VECTOR_BODY, {"webhook-timestamp": str(VECTOR_TS + 1)}, VECTOR_TS, "no signature matches"),
        (VECTOR_BODY, {}, VECTOR_TS + 301, "outside the 300s tolerance"),
        (VECTOR_BODY, {}, VECTOR_TS - 301, "outside the 300s tolerance"),
        (VECTOR_BODY, {"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]}, VECTOR_TS, "no v1 signature"),
        (VECTOR_BODY, {"webhook-timestamp": "soon"}, VECTOR_TS, "not a Unix time"),
    ],
)
def test_refuses_tampering_replays_and_garbage(body: bytes, extra: dict[str, str], now: int, reason: str) -> None:
    with pytest.raises(webhook_signing.SignatureError, match=reason):
        webhook_signing.verify(VECTOR_SECRET, {**HEADERS, **extra}, body, now=now)
    with pytest.raises(standard_webhooks.VerificationError):  # the independent verifier agrees
        standard_webhooks.verify(VECTOR_SECRET, {**HEADERS, **extra}, body, now=now)


def test_missing_headers_wrong_secret_and_no_secret() -> None:
    with pytest.raises(webhook_signing.SignatureError, match="missing header webhook-signature"):
        webhook_signing.verify(VECTOR_SECRET, {k: v for k, v in HEADERS.items() if k != "webhook-signature"}, b"")
    with pytest.raises(webhook_signing.SignatureError, match="no signature matches"):
        webhook_signing.verify(webhooks.new_secret(), HEADERS, VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(webhook_signing.SignatureError, match="no secret"):
        webhook_signing.verify([], HEADERS, VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(webhook_signing.SignatureError, match="not a valid whsec_ secret"):
        webhook_signing.verify("whsec_!!!", HEADERS, VECTOR_BODY, now=VECTOR_TS)


def test_an_old_delivery_verifies_when_the_timestamp_check_is_off() -> None:
    webhook_signing.verify(VECTOR_SECRET, HEADERS, VECTOR_BODY, tolerance=None, now=VECTOR_TS + 10**6)


def test_during_rotation_either_secret_verifies_what_the_signer_made() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": webhooks.signatures([new, old], "msg_1", VECTOR_TS, b"{}"),
    }
    for secret in (old, new):
        webhook_signing.verify(secret, headers, b"{}", now=VECTOR_TS)
        standard_webhooks.verify(secret, headers, b"{}", now=VECTOR_TS)


def test_the_signer_is_the_same_code_and_imports_only_the_standard_library() -> None:
    assert webhooks.signature is webhook_signing.signature
    code = (
        "import sys, stepanim.webhook_signing; "
        "print(sorted(m for m in ('httpx', 'redis', 'celery', 'pydantic', 'stepanim.settings') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
