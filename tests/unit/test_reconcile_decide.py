"""The reconciler's decision, a pure function of what it observed."""

import pytest

from stepanim.jobs import JobStatus
from stepanim.reconcile import Action, Observation, decide

NOW = 1_000_000.0
GRACE = 10.0
OLD = NOW - 60


def obs(status: JobStatus | None, **kw: object) -> Observation:
    base: dict[str, object] = {"updated_at": OLD, "leased": False, "waiting": False, "delivered_at": None}
    base.update(kw)
    return Observation(status=status, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [None, JobStatus.succeeded, JobStatus.failed, JobStatus.canceled])
def test_terminal_or_gone_jobs_are_forgotten(status: JobStatus | None) -> None:
    assert decide(obs(status), now=NOW, grace=GRACE) == Action.forget


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.rendering, JobStatus.encoding])
def test_a_leased_or_waiting_job_is_kept(status: JobStatus) -> None:
    assert decide(obs(status, leased=True), now=NOW, grace=GRACE) == Action.keep
    assert decide(obs(status, waiting=True), now=NOW, grace=GRACE) == Action.keep


def test_a_message_delivered_moments_ago_is_given_time_to_take_the_lease() -> None:
    assert decide(obs(JobStatus.queued, delivered_at=NOW - 1), now=NOW, grace=GRACE) == Action.keep
    # Delivered long ago and nobody holds the lease: the worker that got it is gone.
    assert decide(obs(JobStatus.queued, delivered_at=NOW - 60), now=NOW, grace=GRACE) == Action.requeue_render


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.rendering, JobStatus.encoding])
def test_a_job_whose_task_the_reconciler_just_sent_again_is_not_lost_again(status: JobStatus) -> None:
    """Found in a fault test: the resent message was popped from its queue and not yet filed as
    unacknowledged by the restarting worker, so the broker showed it nowhere; a second resend followed."""
    assert decide(obs(status, resent=True), now=NOW, grace=GRACE) == Action.keep


def test_a_job_changed_moments_ago_is_not_lost_yet() -> None:
    # E.g. the API stored it and has not enqueued yet, or a render just finished.
    assert decide(obs(JobStatus.queued, updated_at=NOW - 1), now=NOW, grace=GRACE) == Action.keep
    assert decide(obs(JobStatus.encoding, updated_at=NOW - 1), now=NOW, grace=GRACE) == Action.keep


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (JobStatus.queued, Action.requeue_render),
        (JobStatus.rendering, Action.requeue_render),
        (JobStatus.encoding, Action.requeue_encode),
    ],
)
def test_a_job_nobody_works_on_is_requeued_at_its_stage(status: JobStatus, action: Action) -> None:
    assert decide(obs(status), now=NOW, grace=GRACE) == action


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.rendering, JobStatus.encoding])
def test_a_grid_nobody_moves_on_gets_its_grid_task_again(status: JobStatus) -> None:
    # Queued: never fanned out; rendering: its cells are done but the wake-up was lost; encoding: composer lost.
    assert decide(obs(status, grid=True), now=NOW, grace=GRACE) == Action.requeue_grid
    # A rendering grid with an open cell is observed as leased: the cells are reconciled themselves.
    assert decide(obs(status, grid=True, leased=True), now=NOW, grace=GRACE) == Action.keep
