"""Every Redis key this service writes, in one place. Pure: names only, no I/O.

``<p>`` is ``settings.key_prefix``:

- ``<p>:job:<id>``                  the job record as JSON (``stepanim.store``)
- ``<p>:job:<id>:events``           a stream of the job's events (``stepanim.events``)
- ``<p>:job:<id>:cancel``           set when a client asked to cancel; also a pub/sub channel of
  the same name that tells the render or encode worker at once (``stepanim.cancel``)
- ``<p>:job:<id>:lease:<stage>``    who works on the job's render or encode now (``stepanim.leases``)
- ``<p>:job:<id>:requeues``         how often the reconciler re-enqueued the job
- ``<p>:job:<id>:resent``           the reconciler sent its task less than a lease ago
- ``<p>:job:<id>:deliveries``       the job's webhook delivery attempts (a capped list)
- ``<p>:job:<id>:throttle:<name>``  set while a throttled action (progress webhook) must wait
- ``<p>:jobs:open``                 sorted set of the jobs not yet terminal (score: creation time)
- ``<p>:tenant:<t>:jobs``           the tenant's job ids, scored by creation time (listing)
- ``<p>:upload:<id>``               the tenant that stored an init image
- ``<p>:apikey:<k>:active``         ids of the key's unfinished jobs (concurrent-job quota)
- ``<p>:apikey:<k>:rate:<bucket>:<window>``  request counter of one rate-limit window
- ``<p>:apikey:<k>:webhook-secrets`` the key's webhook secrets, newest first, with expiry
- ``<p>:idempotency:<t>:<sha256>``  what an Idempotency-Key produced (``stepanim.admission``)
- ``<p>:delivery:<webhook-id>``     attempts made of one webhook message
- ``<p>:published:encoder``         what the encoders' ffmpeg supports, with an expiry
- ``<p>:published:models:<worker>`` one render worker's models, with an expiry; the set
  ``<p>:published:models`` names the workers (``stepanim.published``)
- ``<p>:published:adapters:<worker>`` the same worker's LoRAs and embeddings, written and
  expiring with its models
- ``<p>:metrics``                   counters every process adds to (``stepanim.metrics``)
- ``<p>:<name>:lock``               a short lock held by one of several replicas (the reconciler)

Celery's Redis transport keeps its own keys in the same database: one list per queue
(named after the queue) and ``unacked`` / ``unacked_index``; ``stepanim.broker`` reads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "stepanim"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def lease(self, job_id: str, stage: str) -> str:
        return f"{self.prefix}:job:{job_id}:lease:{stage}"

    def requeues(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:requeues"

    def resent(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:resent"

    def deliveries(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:deliveries"

    def throttle(self, job_id: str, name: str) -> str:
        return f"{self.prefix}:job:{job_id}:throttle:{name}"

    def open_jobs(self) -> str:
        return f"{self.prefix}:jobs:open"

    def tenant_jobs(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def upload(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{upload_id}"

    def active(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}:active"

    def rate(self, key_id: str, bucket: str, window: int) -> str:
        return f"{self.prefix}:apikey:{key_id}:rate:{bucket}:{window}"

    def webhook_secrets(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}:webhook-secrets"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    def delivery(self, msg_id: str) -> str:
        return f"{self.prefix}:delivery:{msg_id}"

    def published_encoder(self) -> str:
        return f"{self.prefix}:published:encoder"

    def published_workers(self) -> str:
        return f"{self.prefix}:published:models"

    def published_models(self, worker: str) -> str:
        return f"{self.prefix}:published:models:{worker}"

    def published_adapters(self, worker: str) -> str:
        return f"{self.prefix}:published:adapters:{worker}"

    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:{name}:lock"

    def job_keys(self, job_id: str) -> list[str]:
        """Every per-job key (for deleting a job)."""
        return [
            self.job(job_id),
            self.cancel(job_id),
            self.events(job_id),
            self.lease(job_id, "render"),
            self.lease(job_id, "encode"),
            self.requeues(job_id),
            self.resent(job_id),
            self.deliveries(job_id),
        ]
