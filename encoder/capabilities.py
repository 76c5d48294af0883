"""Probing this worker's ffmpeg once at start-up and keeping what it supports published.

See ``stepanim.capabilities`` for why the encoder publishes and the API reads.
"""

from __future__ import annotations

import logging

from encoder.ffmpeg import CODECS, FfmpegError, find_binary, listing, version
from stepanim.capabilities import Capabilities, parse_encoders, parse_filters, supported
from stepanim.jobs import utcnow
from stepanim.published import Publisher, expiry
from stepanim.services import Services
from stepanim.video_options import Codec, Interpolation

log = logging.getLogger(__name__)

# Filters every encode uses (timing, padding, even sizes, segments).
BASE_FILTERS = ("fps", "tpad", "trim", "setpts", "scale")


def codec_needs() -> dict[str, list[str]]:
    needs: dict[str, list[str]] = {}
    for codec, spec in CODECS.items():
        required = [spec.encoder] if spec.encoder else ["gif", "palettegen", "paletteuse", "split"]
        needs[codec.value] = [*required, *BASE_FILTERS]
    return needs


INTERPOLATION_NEEDS: dict[str, list[str]] = {
    Interpolation.none.value: [],
    Interpolation.blend.value: ["minterpolate"],
    Interpolation.mci.value: ["minterpolate"],
}


def probe_capabilities(ffmpeg: str) -> Capabilities:
    encoders = parse_encoders(listing(ffmpeg, "encoders"))
    filters = parse_filters(listing(ffmpeg, "filters"))
    codecs, missing_codecs = supported(codec_needs(), encoders=encoders, filters=filters)
    modes, missing_modes = supported(INTERPOLATION_NEEDS, encoders=encoders, filters=filters)
    return Capabilities(
        ffmpeg=ffmpeg,
        ffmpeg_version=version(ffmpeg),
        codecs=[Codec(c) for c in codecs],
        interpolations=[Interpolation(m) for m in modes],
        missing={**missing_codecs, **missing_modes},
        probed_at=utcnow(),
    )


def publish(svc: Services) -> Capabilities | None:
    """Probe this worker's ffmpeg and publish what it supports for the API (``stepanim.published``);
    logs (and returns None) when ffmpeg is unusable."""
    try:
        caps = probe_capabilities(find_binary("ffmpeg", svc.settings.ffmpeg_path))
    except FfmpegError as e:
        log.error("encoder capabilities not published: %s", e)
        return None
    svc.published.set_encoder(caps, ttl=expiry(svc.settings.publish_interval_seconds))
    log.info("encoder capabilities: codecs %s, interpolation %s", caps.codecs, caps.interpolations)
    return caps


def start_publishing(svc: Services) -> Publisher | None:
    """:func:`publish`, then keep the result published: the binary does not change while the
    worker runs, but Redis may lose it (a restart without persistence)."""
    caps = publish(svc)
    if caps is None:
        return None
    published = svc.published
    period = svc.settings.publish_interval_seconds
    return Publisher(
        "encoder capabilities",
        lambda: published.set_encoder(caps, ttl=expiry(period)),
        published.has_encoder,
        period=period,
    ).start()
