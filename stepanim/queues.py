"""Queue and task names, the Celery app factory, and hand-off helpers.

Processes hand work to each other by task *name*, so the API never imports the
render worker (torch, diffusers) or the encoder.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Queue, serialization  # type: ignore[attr-defined]

from stepanim.settings import Settings

RENDER_QUEUE = "render"
ENCODE_QUEUE = "encode"
NOTIFY_QUEUE = "notify"

RENDER_TASK = "stepanim.render"
ENCODE_TASK = "stepanim.encode"
NOTIFY_TASK = "stepanim.notify"

ROUTES = {
    RENDER_TASK: {"queue": RENDER_QUEUE},
    ENCODE_TASK: {"queue": ENCODE_QUEUE},
    NOTIFY_TASK: {"queue": NOTIFY_QUEUE},
}


def make_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    app = Celery("stepanim", broker=settings.redis_url, include=include or [])
    app.conf.update(
        task_queues=[Queue(name) for name in (RENDER_QUEUE, ENCODE_QUEUE, NOTIFY_QUEUE)],  # type: ignore[no-untyped-call]
        task_create_missing_queues=False,
        task_routes=ROUTES,
        task_default_queue=NOTIFY_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_serializer="json",
        accept_content=["json"],
        # Bound the longest task (settings check it stays below visibility_timeout); the soft
        # limit raises in the task, the hard one a minute later ends the process.
        task_soft_time_limit=settings.task_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds + 60,
    )
    return app


def task_message(app: Celery, name: str, args: list[Any], *, queue: str) -> str:
    """The broker message of task ``name``, exactly as ``send_task`` makes it and kombu's Redis
    transport stores it: JSON ``LPUSH``ed onto the list named after the queue.

    The API writes a render message in the same Redis script as the job record (see
    ``AsyncJobStore.admit``), so a job is never stored without its task nor queued without its
    record, and a POST costs one round trip instead of kombu's publish. Celery's own
    message protocol (v2) builds the message once per task and queue
    (:func:`_message_template`); each message then only gets its ids and arguments, written
    into the template's JSON text. ``tests/integration/test_admission.py`` compares it with a
    message published by ``send_task`` and a real worker runs it in every end-to-end test.
    """
    template = _message_template(app, name, queue)
    body = f"[{json.dumps(args)}, {{}}, {template.embed}]".encode(template.content_encoding)  # kombu's json.dumps
    task_id = f'"{uuid.uuid4()}"'  # JSON strings; ids and base64 need no escaping
    values = {
        "body": f'"{base64.b64encode(body).decode()}"',
        "id": task_id,
        "root_id": task_id,
        "argsrepr": json.dumps(repr(args)),
        "correlation_id": task_id,
        "delivery_tag": f'"{uuid.uuid4()}"',
    }
    text = template.text
    return "".join(text[n] if n % 2 == 0 else values[text[n]] for n in range(len(text)))


# The fields that differ between messages, as they stand in the template until filled in.
_SLOT = "\x00stepanim:{}\x00"
_SLOTS = re.compile(re.escape(json.dumps(_SLOT.format("@"))).replace("@", "([a-z_]+)"))


@dataclass(frozen=True)
class _MessageTemplate:
    text: tuple[str, ...]  # the message's JSON split around its slots: literal, field name, literal, ...
    embed: str  # the JSON of the body's third part (callbacks, chain, chord)
    content_encoding: str


@functools.lru_cache(maxsize=32)
def _message_template(app: Celery, name: str, queue: str) -> _MessageTemplate:
    """What every message of task ``name`` on ``queue`` shares, made by Celery (protocol v2) and
    in kombu's Redis envelope, as JSON text with a slot for each id and the arguments."""
    headers, properties, body, _ = app.amqp.as_task_v2("", name, args=[], kwargs={}, argsrepr="[]", kwargsrepr="{}")
    content_type, content_encoding, _payload = serialization.dumps(  # type: ignore[no-untyped-call]
        body, serializer=app.conf.task_serializer
    )
    if content_type != "application/json":
        raise ValueError(f"task_message writes JSON messages; this app's task_serializer makes {content_type}")
    _args, _kwargs, embed = body
    slot = _SLOT.format
    message = {
        "body": slot("body"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": {**headers, "id": slot("id"), "root_id": slot("root_id"), "argsrepr": slot("argsrepr")},
        "properties": {
            **properties,
            "correlation_id": slot("correlation_id"),
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,  # kombu's list for priority 0 is the bare queue name
            "body_encoding": "base64",
            "delivery_tag": slot("delivery_tag"),
        },
    }
    return _MessageTemplate(tuple(_SLOTS.split(json.dumps(message))), json.dumps(embed), content_encoding)


def enqueue_render(app: Celery, job_id: str) -> None:
    app.send_task(RENDER_TASK, args=[job_id], queue=RENDER_QUEUE)


def enqueue_encode(app: Celery, job_id: str) -> None:
    app.send_task(ENCODE_TASK, args=[job_id], queue=ENCODE_QUEUE)


def enqueue_rendition(app: Celery, job_id: str, rendition_id: str) -> None:
    """The encode task, for one rendition of a finished job's stored frames."""
    app.send_task(ENCODE_TASK, args=[job_id], kwargs={"rendition_id": rendition_id}, queue=ENCODE_QUEUE)


def enqueue_notify(app: Celery, job_id: str, event: str) -> None:
    app.send_task(NOTIFY_TASK, args=[job_id, event], queue=NOTIFY_QUEUE)
