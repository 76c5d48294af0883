"""The API's render task sender (api/dispatch.py): every id sent, in order, also at shutdown and
after a failed batch."""

from __future__ import annotations

import threading

from api.dispatch import TaskSender


def test_every_job_id_is_sent_in_order_and_close_sends_what_waits() -> None:
    sent: list[str] = []
    gate = threading.Event()

    def send_many(job_ids: list[str]) -> None:
        gate.wait(5)  # the first batch is slow: the rest pile up behind it
        sent.extend(job_ids)

    sender = TaskSender(send_many)
    for n in range(50):
        sender.send(f"job-{n}")
    gate.set()
    sender.close(timeout=5)
    assert sent == [f"job-{n}" for n in range(50)]


def test_ids_waiting_together_go_in_one_batch() -> None:
    batches: list[list[str]] = []
    first = threading.Event()
    release = threading.Event()

    def send_many(job_ids: list[str]) -> None:
        batches.append(job_ids)
        first.set()
        release.wait(5)

    sender = TaskSender(send_many)
    sender.send("a")
    assert first.wait(5)
    for job_id in ("b", "c", "d"):
        sender.send(job_id)
    release.set()
    sender.close(timeout=5)
    assert batches == [["a"], ["b", "c", "d"]]


def test_a_failed_batch_is_logged_and_the_sender_goes_on(caplog) -> None:  # type: ignore[no-untyped-def]
    sent: list[str] = []

    def send_many(job_ids: list[str]) -> None:
        if "bad" in job_ids:
            raise ConnectionError("broker away")
        sent.extend(job_ids)

    sender = TaskSender(send_many)
    sender.send("bad")
    sender.close(timeout=5)
    again = TaskSender(send_many)
    again.send("good")
    again.close(timeout=5)
    assert sent == ["good"]
    assert "reconciler will send them" in caplog.text


def test_flush_waits_for_what_was_handed_in_before_it() -> None:
    sent: list[str] = []
    release = threading.Event()

    def send_many(job_ids: list[str]) -> None:
        release.wait(5)
        sent.extend(job_ids)

    sender = TaskSender(send_many)
    for job_id in ("a", "b"):
        sender.send(job_id)
    assert not sender.flush(timeout=0.2)  # the send is held up
    release.set()
    assert sender.flush(timeout=5)
    assert sent == ["a", "b"]
    sender.close(timeout=5)
