"""/webhooks/secret: read and rotate the caller's webhook signing secret; and the
OpenAPI ``webhooks`` section that describes what the service sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, ServicesDep
from api.errors import AUTH_RESPONSES
from stepanim import webhooks
from stepanim.auth import initial_webhook_secret
from stepanim.grid_public import GridPublic
from stepanim.public import AnimationPublic

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (an example in the docs)


class SecretPublic(BaseModel):
    secret: str = Field(description="A `whsec_` secret (base64 after the prefix).", examples=[_SECRET])
    expires_at: datetime | None = Field(
        description="When an old secret stops signing; null for the current one.", examples=[None]
    )


class WebhookSecrets(BaseModel):
    """The secrets that sign this API key's webhooks (Standard Webhooks)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"current": _SECRET, "secrets": [{"secret": _SECRET, "expires_at": None}]}]}
    )

    current: str = Field(description="The secret to verify with from now on.", examples=[_SECRET])
    secrets: list[SecretPublic] = Field(
        description="Every secret that signs deliveries now, newest first; during a rotation the old one "
        "is listed with its expiry, and each delivery carries one signature per secret."
    )


def _public(pairs: list[tuple[str, float | None]]) -> WebhookSecrets:
    return WebhookSecrets(
        current=pairs[0][0],
        secrets=[
            SecretPublic(secret=s, expires_at=datetime.fromtimestamp(exp, UTC) if exp is not None else None)
            for s, exp in pairs
        ],
    )


@router.get("/secret", response_model=WebhookSecrets, summary="Get the webhook secret", responses=AUTH_RESPONSES)
def get_secret(*, svc: ServicesDep, principal: PrincipalDep) -> WebhookSecrets:
    """The secret(s) that sign the webhooks of jobs created with this API key."""
    initial = initial_webhook_secret(svc.settings, principal.key_id)
    pairs = svc.webhooks.secrets(principal.key_id, initial=lambda: initial or webhooks.new_secret())
    return _public(pairs)


@router.post(
    "/secret/rotate", response_model=WebhookSecrets, summary="Rotate the webhook secret", responses=AUTH_RESPONSES
)
def rotate_secret(*, svc: ServicesDep, principal: PrincipalDep) -> WebhookSecrets:
    """Make a new secret current. The previous one keeps signing (a second signature on every
    delivery) for `webhook_secret_grace_seconds` (24 h by default), so receivers can switch over."""
    initial = initial_webhook_secret(svc.settings, principal.key_id)
    pairs = svc.webhooks.rotate_secret(
        principal.key_id,
        new_secret=webhooks.new_secret(),
        grace_seconds=svc.settings.webhook_secret_grace_seconds,
        initial=lambda: initial or webhooks.new_secret(),
    )
    return _public(pairs)


# The OpenAPI `webhooks` section: what the notify worker POSTs to a job's `webhook`.

EVENTS = {
    "animation.started": "The render worker started the job (best effort, one attempt).",
    "animation.progress": "More steps were captured; at most one every few seconds per job (best effort).",
    "animation.succeeded": "The video is ready (`data.video.url`). Retried for at least 24 h until a 2xx.",
    "animation.failed": "The job failed (`data.error`). Retried for at least 24 h until a 2xx.",
    "animation.canceled": "The job was canceled. Retried for at least 24 h until a 2xx.",
}


class WebhookPayload(BaseModel):
    """The body of every webhook (Standard Webhooks payload structure)."""

    type: Literal[
        "animation.started", "animation.progress", "animation.succeeded", "animation.failed", "animation.canceled"
    ] = Field(description="The event.", examples=["animation.succeeded"])
    timestamp: datetime = Field(description="When the event happened (ISO 8601).", examples=["2026-01-02T03:04:05Z"])
    data: AnimationPublic = Field(description="The job, as GET /animations/{id} returns it at send time.")


# A grid's webhooks: the base request's `webhook` and `webhook_events` (named animation.*) give grid.* events.
GRID_EVENTS = {
    "grid.started": "The grid's cells were sent to the render workers (best effort, one attempt).",
    "grid.succeeded": "The grid video is ready (`data.video.url`). Retried for at least 24 h until a 2xx.",
    "grid.failed": "The grid failed (`data.error` names the cells that failed). Retried for at least 24 h.",
    "grid.canceled": "The grid was canceled. Retried for at least 24 h until a 2xx.",
}


class GridWebhookPayload(BaseModel):
    """The body of a grid's webhooks (Standard Webhooks payload structure)."""

    type: Literal["grid.started", "grid.succeeded", "grid.failed", "grid.canceled"] = Field(
        description="The event.", examples=["grid.succeeded"]
    )
    timestamp: datetime = Field(description="When the event happened (ISO 8601).", examples=["2026-01-02T03:04:05Z"])
    data: GridPublic = Field(description="The grid, as GET /grids/{id} returns it at send time.")


def document_webhooks(app: FastAPI) -> None:
    for event, description in EVENTS.items():
        document_webhook(app, event, description, WebhookPayload)
    for event, description in GRID_EVENTS.items():
        document_webhook(app, event, description, GridWebhookPayload)


def document_webhook(app: FastAPI, event: str, description: str, payload: type[BaseModel]) -> None:
    """One entry of the OpenAPI ``webhooks`` section: ``payload`` as the body, the signing headers."""

    def receiver(
        body: BaseModel,
        webhook_id: Annotated[
            str,
            Header(
                description="Message id; the same on every attempt (deduplicate on it).",
                examples=["msg_4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b_animation.succeeded"],
            ),
        ],
        webhook_timestamp: Annotated[
            str, Header(description="Unix seconds when this attempt was signed.", examples=["1767323452"])
        ],
        webhook_signature: Annotated[
            str,
            Header(
                description='Space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; one per valid '
                "secret (two during a rotation).",
                examples=["v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="],
            ),
        ],
    ) -> None:
        pass

    receiver.__annotations__["body"] = payload  # the body this event carries
    app.webhooks.post(
        event,
        summary=event,
        description=f"{description}\n\nAnswer 2xx to acknowledge; 410 stops further attempts; redirects "
        "are not followed. Verify `webhook-signature` with the secret from GET /webhooks/secret.",
        responses={200: {"description": "Received."}, 410: {"description": "Stop sending this message."}},
    )(receiver)
