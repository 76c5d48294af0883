"""The API product against a real redis-server: keys and tenants, listing, idempotency,
limits, the SSRF guard at create time, cancel in each state, event replay, Prefer: wait,
webhook secrets."""

from __future__ import annotations

import base64
import http.server
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stepanim import lifecycle
from stepanim.jobs import JobImage, JobStatus, Rendition, RenditionStatus, utcnow
from stepanim.video_options import Codec, VideoOptions
from tests.conftest import RECEIVER_HOST, QuietHandler, serving
from tests.integration.api_support import Api, headers, running_api
from tests.unit.test_ssrf import CREATE_TIME_REASON, REFUSED

BODY = {"prompt": "a lighthouse", "steps": 4, "width": 64, "height": 64}


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[Api]:
    with running_api(redis_url, tmp_path) as a:
        yield a


def create(api: Api, who: str = "alice", **body: Any) -> dict[str, Any]:
    response = api.post({**BODY, **body}, who)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details"}
    return error  # type: ignore[no-any-return]


# Keys and tenants ---------------------------------------------------------------------


def test_jobs_need_a_key_but_health_and_the_document_do_not(api: Api) -> None:
    c = api.client
    assert c.get("/healthz").status_code == 200
    assert c.get("/openapi.json").status_code == 200
    for method, path in [("POST", "/animations"), ("GET", "/animations"), ("GET", "/webhooks/secret")]:
        for auth_header in [{}, {"authorization": "Bearer sa_unknown"}, {"authorization": "Basic dTpw"}]:
            response = c.request(method, path, json=BODY, headers=auth_header)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.render_queue_length() == 0


def test_the_docs_page_and_its_assets_come_from_the_api_itself(api: Api) -> None:
    page = api.client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(src.startswith("/") for src in sources), sources  # no CDN: offline it still works
    for src in sources:
        assert api.client.get(src).status_code == 200, src
    assert api.client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_development_mode_is_explicit(redis_url: str, tmp_path: Path) -> None:
    with running_api(redis_url, tmp_path, allow_anonymous=True) as dev:
        response = dev.client.post("/animations", json=BODY)
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert dev.client.get(f"/animations/{job_id}").status_code == 200
        assert dev.get(f"/animations/{job_id}").status_code == 404  # a real key is another tenant
        # Any other key, a malformed header or none at all acts as the development tenant.
        for header in ["Bearer sa_...", "Bearer", "Basic dTpw"]:
            assert dev.client.get(f"/animations/{job_id}", headers={"authorization": header}).status_code == 200


def test_another_tenant_gets_404_for_everything(api: Api) -> None:
    job = create(api, "alice")
    path = f"/animations/{job['id']}"
    assert api.get(path, "alice2").status_code == 200  # same tenant, other key
    for method, suffix in [("GET", ""), ("POST", "/cancel"), ("GET", "/events")]:
        response = api.client.request(method, path + suffix, headers=headers("bob"))
        error = assert_error(response, 404, "not_found")
        unknown = api.client.request(method, f"/animations/{'0' * 32}{suffix}", headers=headers("bob"))
        assert error["message"].replace(job["id"], "0" * 32) == unknown.json()["error"]["message"]
    assert api.get("/animations", "bob").json()["data"] == []
    assert api.get(path).json()["status"] == "queued"  # bob's cancel did nothing


def test_listing_pages_through_the_tenants_jobs_with_a_status_filter(api: Api) -> None:
    ids = [create(api, "alice" if i % 2 else "alice2")["id"] for i in range(7)]
    create(api, "bob")
    for job_id in ids[:3]:
        assert api.client.post(f"/animations/{job_id}/cancel", headers=headers()).status_code == 200
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/animations", params=params, headers=headers()).json()
        seen += [j["id"] for j in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3  # newest first, each once, no empty last page
    canceled = api.client.get("/animations", params={"status": "canceled"}, headers=headers()).json()["data"]
    assert sorted(j["id"] for j in canceled) == sorted(ids[:3])
    both = api.client.get("/animations", params=[("status", "queued"), ("status", "canceled")], headers=headers())
    assert len(both.json()["data"]) == 7
    assert_error(
        api.client.get("/animations", params={"cursor": "garbage!"}, headers=headers()), 422, "invalid_request"
    )
    assert_error(api.client.get("/animations", params={"limit": 0}, headers=headers()), 422, "invalid_request")
    assert_error(api.client.get("/animations", params={"status": "nope"}, headers=headers()), 422, "invalid_request")


# Idempotency ------------------------------------------------------------------------------


def test_the_same_key_and_body_return_the_same_job_and_render_once(api: Api) -> None:
    first = api.post(BODY, idempotency_key="order-1")
    again = api.post(dict(reversed(list(BODY.items()))), idempotency_key="order-1")  # same body, other order
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert api.render_queue_length() == 1
    other_tenant = api.post(BODY, "bob", idempotency_key="order-1")  # keys are per tenant
    assert other_tenant.status_code == 202 and other_tenant.json()["id"] != first.json()["id"]
    ttl = api.svc.store.redis.ttl(api.svc.keys.idempotency("acme", "order-1"))
    assert ttl > 24 * 3600 - 60


def test_the_same_key_with_another_body_is_refused(api: Api) -> None:
    assert api.post(BODY, idempotency_key="order-2").status_code == 202
    keys = api.job_keys()
    error = assert_error(api.post({**BODY, "steps": 5}, idempotency_key="order-2"), 422, "idempotency_key_reused")
    assert error["message"].startswith("Idempotency-Key:")
    assert api.job_keys() == keys and api.render_queue_length() == 1


def test_a_duplicate_while_the_first_is_in_flight_gets_409(api: Api) -> None:
    from api.idempotency import fingerprint
    from stepanim.request import AnimationCreate

    # The first request has claimed the key and not finished (as if it were still running).
    print_ = fingerprint(AnimationCreate.model_validate(BODY))
    pending = json.dumps({"fingerprint": print_, "job_id": None, "claim": "someone"})
    api.svc.store.redis.set(api.svc.keys.idempotency("acme", "order-3"), pending, ex=60)
    response = api.post(BODY, idempotency_key="order-3")
    assert_error(response, 409, "idempotency_conflict")
    assert response.headers["retry-after"] == "1"
    assert api.render_queue_length() == 0


def test_concurrent_duplicates_make_one_job(api: Api) -> None:
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: api.post(BODY, idempotency_key="order-4"), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409} and 202 in statuses
    assert len({r.json()["id"] for r in responses if r.status_code == 202}) == 1
    assert api.render_queue_length() == 1


def test_a_repeat_while_the_first_fetches_its_init_image_gets_409(redis_url: str, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "orange").save(png, format="PNG")
    fetched: list[float] = []

    class SlowImage(QuietHandler):
        def do_GET(self) -> None:
            fetched.append(time.monotonic())
            time.sleep(1.0)  # the first request holds its key meanwhile
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png.getvalue())))
            self.end_headers()
            self.wfile.write(png.getvalue())

    with serving(http.server.ThreadingHTTPServer((RECEIVER_HOST, 0), SlowImage)) as server:
        body = {**BODY, "init_image": {"url": f"http://{RECEIVER_HOST}:{server.server_port}/init.png"}}
        with running_api(redis_url, tmp_path, outbound_allow=[RECEIVER_HOST]) as api, ThreadPoolExecutor(1) as pool:
            first = pool.submit(api.post, body, idempotency_key="order-6")
            while not fetched:  # the first request has claimed the key and is fetching
                time.sleep(0.02)
            second = api.post(body, idempotency_key="order-6")
            assert_error(second, 409, "idempotency_conflict")
            assert second.headers["retry-after"] == "1"
            made = first.result()
            assert made.status_code == 202, made.text
            again = api.post(body, idempotency_key="order-6")
            assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
            assert again.json()["id"] == made.json()["id"]
            assert len(fetched) == 1 and api.render_queue_length() == 1


def test_a_refused_request_does_not_burn_its_key(api: Api) -> None:
    assert_error(api.post({**BODY, "steps": 300}, idempotency_key="order-5"), 422, "limit_exceeded")
    assert api.post(BODY, idempotency_key="order-5").status_code == 202
    assert_error(api.post(BODY, idempotency_key="x" * 256), 422, "invalid_request")
    assert_error(api.post(BODY, idempotency_key="with space"), 422, "invalid_request")


# Limits --------------------------------------------------------------------------------------


def test_per_key_rate_limit(redis_url: str, tmp_path: Path) -> None:
    with running_api(redis_url, tmp_path, rate_limit_per_minute=5, create_rate_limit_per_minute=2) as api:
        assert [api.post(BODY).status_code for _ in range(2)] == [202, 202]
        response = api.post(BODY)
        assert_error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        codes = [api.get("/animations").status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429  # 5 requests in all for this key
        assert api.get("/animations", "alice2").status_code == 200  # another key has its own budget
        assert api.render_queue_length() == 2


def test_concurrent_job_quota(redis_url: str, tmp_path: Path) -> None:
    with running_api(redis_url, tmp_path, max_active_jobs=2) as api:
        first, _ = create(api), create(api)
        response = api.post(BODY)
        assert_error(response, 429, "quota_exceeded")
        assert int(response.headers["retry-after"]) >= 1
        assert api.post(BODY, "alice2").status_code == 202  # the quota is per key
        api.client.post(f"/animations/{first['id']}/cancel", headers=headers())
        assert api.post(BODY).status_code == 202  # a finished job frees its place
        assert api.render_queue_length() == 4


def test_body_size_limit(redis_url: str, tmp_path: Path) -> None:
    # POST /animations may carry one inline init image: its limit is 2048 + 4/3 x 1024 bytes.
    with running_api(redis_url, tmp_path, max_request_bytes=2048, max_upload_bytes=1024) as api:
        big = json.dumps({**BODY, "prompt": "x" * 4000})
        declared = api.client.post(
            "/animations", content=big, headers={**headers(), "content-type": "application/json"}
        )
        assert_error(declared, 413, "request_too_large")

        def chunks() -> Iterator[bytes]:
            yield big[:1000].encode()
            yield big[1000:].encode()

        chunked = api.client.post(
            "/animations", content=chunks(), headers={**headers(), "content-type": "application/json"}
        )
        assert_error(chunked, 413, "request_too_large")
        assert api.job_keys() == [] and api.render_queue_length() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": 300}, "steps"),
        ({"width": 2048, "height": 2048}, "width x height"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"animation": {"duration": 90}}, "animation.duration"),
        ({"batch_size": 3}, "batch_size"),
        ({"webhook_events": []}, "webhook_events"),
        ({"webhook_events": ["animation.exploded"]}, "webhook_events.0"),
    ],
)
def test_server_limits_are_422_naming_the_limit(
    redis_url: str, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    with running_api(redis_url, tmp_path, max_duration_seconds=60, max_batch_size=2) as api:
        response = api.post({**BODY, **change})
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(f"{field}:"), response.json()
        assert api.job_keys() == [] and api.render_queue_length() == 0


@pytest.mark.parametrize(("url", "word"), [(u, w) for u, w in REFUSED if "example.com" not in u])
def test_webhook_urls_are_refused_at_create_time(api: Api, url: str, word: str) -> None:
    response = api.post({**BODY, "webhook": url})
    error = assert_error(response, 422, "invalid_request")
    word = CREATE_TIME_REASON.get(url, word)
    assert error["message"].startswith("webhook:") and word in error["message"], error
    assert api.job_keys() == [] and api.render_queue_length() == 0


# Cancel ------------------------------------------------------------------------------------


def test_cancel_in_each_state(api: Api) -> None:
    svc = api.svc

    def cancel(job_id: str) -> Any:
        return api.client.post(f"/animations/{job_id}/cancel", headers=headers())

    queued = create(api)["id"]
    response = cancel(queued)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert response.json()["started_at"] is None
    assert cancel(queued).status_code == 200  # idempotent

    rendering = create(api)["id"]
    lifecycle.start_rendering(svc, rendering)
    response = cancel(rendering)
    assert response.status_code == 202
    assert response.json()["status"] == "rendering" and response.json()["cancel_requested"] is True
    assert svc.store.cancel_requested(rendering)  # the render worker checks this after every step
    assert cancel(rendering).status_code == 202  # still idempotent
    lifecycle.cancel(svc, rendering)  # what the worker does at its next step
    assert api.get(f"/animations/{rendering}").json()["status"] == "canceled"

    encoding = create(api)["id"]
    lifecycle.start_rendering(svc, encoding)
    lifecycle.start_encoding(svc, encoding, [])
    response = cancel(encoding)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert svc.store.cancel_requested(encoding)

    for end in ("succeeded", "failed"):
        job_id = create(api)["id"]
        lifecycle.start_rendering(svc, job_id)
        if end == "succeeded":
            lifecycle.finish_encoding(svc, job_id, videos=None)
        else:
            lifecycle.fail(svc, job_id, "render_error", "boom")
        error = assert_error(cancel(job_id), 409, "already_finished")
        assert end in error["message"] and error["details"][0]["status"] == end
        assert api.get(f"/animations/{job_id}").json()["status"] == end
    assert_error(cancel("f" * 32), 404, "not_found")


# Live events (replay; the live stream is in the e2e tests) -------------------------------------


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def test_events_replay_everything_and_resume_after_last_event_id(api: Api) -> None:
    svc = api.svc
    job_id = create(api)["id"]
    lifecycle.start_rendering(svc, job_id)
    for step in (1, 2, 3):
        lifecycle.record_progress(svc, job_id, step=step, total=4, latest_frames=[f"jobs/{job_id}/frames/{step}.png"])
    lifecycle.start_encoding(svc, job_id, [])
    lifecycle.finish_encoding(svc, job_id, videos=None)

    response = api.get(f"/animations/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [(e["event"], e["data"].get("status") or e["data"].get("step")) for e in events]
    assert kinds == [
        ("status", "queued"),
        ("status", "rendering"),
        ("progress", 1),
        ("progress", 2),
        ("progress", 3),
        ("status", "encoding"),
        ("status", "succeeded"),
    ]
    assert events[-1]["data"]["animation"]["status"] == "succeeded"
    assert "/files/jobs/" in events[2]["data"]["latest_frame_url"]
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)

    resumed = parse_sse(api.get(f"/animations/{job_id}/events", last_event_id=ids[2]).text)
    assert [e["id"] for e in resumed] == ids[3:]
    assert parse_sse(api.get(f"/animations/{job_id}/events", last_event_id=ids[-1]).text) == []
    assert_error(api.get(f"/animations/{job_id}/events", last_event_id="yesterday"), 422, "invalid_request")


def test_the_stream_follows_a_rendition_made_after_the_job_finished(api: Api) -> None:
    svc = api.svc
    job_id = create(api)["id"]
    lifecycle.start_rendering(svc, job_id)
    lifecycle.start_encoding(svc, job_id, [JobImage(batch_index=0, seed=1, frames=[f"jobs/{job_id}/frames/1.png"])])
    lifecycle.finish_encoding(svc, job_id, videos=None)
    rendition = Rendition(id="r" * 32, options=VideoOptions(codec=Codec.gif), created_at=utcnow())
    lifecycle.add_rendition(svc, job_id, rendition)

    def encode_it() -> None:  # as the encoder would, while the client is connected
        time.sleep(0.5)
        lifecycle.rendition_status(svc, job_id, rendition.id, RenditionStatus.encoding)
        lifecycle.rendition_status(svc, job_id, rendition.id, RenditionStatus.succeeded)

    encoder = threading.Thread(target=encode_it)
    encoder.start()
    events = parse_sse(api.get(f"/animations/{job_id}/events").text)  # ends once the rendition has
    encoder.join()
    tail = [(e["event"], e["data"].get("status")) for e in events][-4:]
    assert tail == [
        ("status", "succeeded"),
        ("rendition", "queued"),
        ("rendition", "encoding"),
        ("rendition", "succeeded"),
    ]
    # A settled job with nothing missed: the stream ends at once.
    assert parse_sse(api.get(f"/animations/{job_id}/events", last_event_id=events[-1]["id"]).text) == []


# Prefer: wait -------------------------------------------------------------------------------------


def test_prefer_wait_returns_the_finished_job(api: Api) -> None:
    svc = api.svc

    def finish_the_next_job() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            jobs, _ = svc.store.list_jobs("acme", limit=1)
            if jobs:
                lifecycle.start_rendering(svc, jobs[0].id)
                lifecycle.finish_encoding(svc, jobs[0].id, videos=None)
                return
            time.sleep(0.05)

    worker = threading.Thread(target=finish_the_next_job)
    worker.start()
    response = api.post(BODY, prefer="wait=20")
    worker.join()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.headers["preference-applied"] == "wait=20"

    started = time.monotonic()
    response = api.post(BODY, "bob", prefer="respond-async, wait=1")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert time.monotonic() - started >= 0.9
    assert api.post(BODY, "bob", prefer="handling=lenient").status_code == 202


# Webhook secrets ----------------------------------------------------------------------------------


def test_webhook_secrets_per_key_and_rotation(api: Api) -> None:
    first = api.get("/webhooks/secret").json()
    assert api.get("/webhooks/secret").json() == first  # stable
    assert first["current"].startswith("whsec_") and first["secrets"] == [
        {"secret": first["current"], "expires_at": None}
    ]
    assert api.get("/webhooks/secret", "alice2").json()["current"] != first["current"]  # per key
    rotated = api.client.post("/webhooks/secret/rotate", headers=headers()).json()
    assert rotated["current"] != first["current"]
    assert [s["secret"] for s in rotated["secrets"]] == [rotated["current"], first["current"]]
    old_expiry = rotated["secrets"][1]["expires_at"]
    assert old_expiry is not None and rotated["secrets"][0]["expires_at"] is None
    assert api.get("/webhooks/secret").json() == rotated


def test_a_job_shows_its_links_and_status_fields(api: Api) -> None:
    job = create(api)
    assert job["urls"] == {
        "get": f"http://testserver/animations/{job['id']}",
        "cancel": f"http://testserver/animations/{job['id']}/cancel",
        "stream": f"http://testserver/animations/{job['id']}/events",
    }
    assert job["webhook_deliveries"] == [] and job["cancel_requested"] is False
    assert job["request"]["webhook_events"] == ["animation.succeeded", "animation.failed", "animation.canceled"]
    assert JobStatus(job["status"]) == JobStatus.queued


def test_malformed_download_links_are_4xx_not_500(api: Api) -> None:
    """Found by schemathesis: a non-ASCII signature used to crash the HMAC comparison."""
    for params in [
        {"expires": "1767326045", "signature": "*õ葧%ö"},
        {"expires": "soon", "signature": "0" * 64},
        {"expires": "1767326045", "signature": "0" * 64},
    ]:
        response = api.client.get("/files/jobs/x/video.mp4", params=params)
        assert response.status_code in (403, 422), (params, response.text)
        assert set(response.json()["error"]) == {"code", "message", "details"}


# Uploads belong to a tenant ------------------------------------------------------------------------


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_is_only_usable_by_its_tenant_and_while_its_record_lives(api: Api) -> None:
    upload = api.client.post("/uploads", files={"file": ("a.png", png(), "image/png")}, headers=headers("alice"))
    assert upload.status_code == 201, upload.text
    upload_id = upload.json()["id"]
    body = {**BODY, "init_image": {"upload_id": upload_id}, "strength": 0.5}

    refused = api.post(body, "bob")  # another tenant: as if there were no such upload
    assert_error(refused, 422, "invalid_request")
    assert refused.json()["error"]["message"] == f"init_image.upload_id: no upload with id {upload_id!r}"
    assert api.post(body, "alice2").status_code == 202  # the same tenant, another key

    api.svc.store.redis.delete(f"stepanim:upload:{upload_id}")  # as when its 7 days are over
    assert_error(api.post(body, "alice"), 422, "invalid_request")

    # An inline image becomes an upload of the tenant that sent it.
    inline = {**BODY, "init_image": {"data": base64.b64encode(png()).decode()}, "strength": 0.5}
    created = api.post(inline, "bob")
    assert created.status_code == 202, created.text
    stored = created.json()["request"]["init_image"]["upload_id"]
    assert api.svc.store.upload_owner(stored) == "globex"


# Health ---------------------------------------------------------------------------------------


def test_health_and_readiness_are_public_and_readiness_names_what_is_down(redis_url: str, tmp_path: Path) -> None:
    with running_api(redis_url, tmp_path) as api:  # API keys are required here
        assert api.client.get("/healthz").json() == {"status": "ok"}
        ready = api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "storage": "ok"}
    from scripts.devstack import free_port

    with running_api(f"redis://127.0.0.1:{free_port()}/0", tmp_path) as down:  # nothing listens there
        assert down.client.get("/healthz").status_code == 200  # alive, just not ready
        ready = down.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and ready.json()["checks"]["redis"].startswith("error")
        assert ready.json()["checks"]["storage"] == "ok"
