"""Retention: keep_completed / keep_failed pruned by maintenance; clean(); remove_on_complete."""

from __future__ import annotations

from datetime import timedelta

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import T0, Events


@pytest.fixture
async def rq(store, clock: ManualClock) -> conveyor.Queue:
    q = store.queue(
        clock=clock, keep_completed=timedelta(minutes=1), keep_failed=timedelta(minutes=10)
    )
    await q.migrate()
    return q


async def _finished_jobs(q: conveyor.Queue) -> dict[str, int]:
    @q.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        ctx.log.info("ran")

    @q.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    ids = {
        "completed": await ok.enqueue(),
        "failed": await bad.enqueue(),
        "cancelled": await ok.enqueue(delay=30),
        "scheduled": await ok.enqueue(delay=3600),
    }
    await q.cancel(ids["cancelled"])
    await q.worker().run_once()
    return ids


async def test_maintenance_prunes_after_keep_completed_and_keep_failed(
    rq: conveyor.Queue, clock: ManualClock
) -> None:
    ids = await _finished_jobs(rq)
    clock.advance(59)
    await rq.run_maintenance()
    assert all([await rq.get_job(i) is not None for i in ids.values()])

    clock.advance(2)  # completed: past keep_completed
    await rq.run_maintenance()
    assert await rq.get_job(ids["completed"]) is None
    assert await rq.get_job_logs(ids["completed"]) == []
    assert await rq.get_job_events(ids["completed"]) == []
    assert (await rq.get_job(ids["failed"])).state is JobState.FAILED  # type: ignore[union-attr]
    assert (await rq.get_job(ids["cancelled"])).state is JobState.CANCELLED  # type: ignore[union-attr]

    clock.advance(timedelta(minutes=9))  # failed and cancelled: past keep_failed
    await rq.run_maintenance()
    assert await rq.get_job(ids["failed"]) is None
    assert await rq.get_job(ids["cancelled"]) is None
    assert await rq.get_job_events(ids["failed"]) == []
    # Upcoming jobs are never pruned, however old.
    job = await rq.get_job(ids["scheduled"])
    assert job is not None and job.state in (JobState.SCHEDULED, JobState.QUEUED)
    assert (await rq.counts())["completed"] == 0


async def test_a_worker_prunes_by_itself(store, clock: ManualClock) -> None:
    q = store.queue(clock=clock, keep_completed=10.0, sweep_interval=0.1, poll_interval=0.05)
    ids = await _finished_jobs(q)
    clock.advance(11)
    from tests.conformance._util import running
    from tests.conftest import wait_for

    async with running(q.worker()):

        async def gone() -> bool:
            return await q.get_job(ids["completed"]) is None

        await wait_for(gone, 10)
    assert await q.get_job(ids["failed"]) is not None


async def test_clean_by_age_and_state(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    @cq.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    old = [await ok.enqueue() for _ in range(3)]
    old_failed = await bad.enqueue()
    await cq.worker().run_once()
    clock.advance(3600)
    new = await ok.enqueue()
    queued = await ok.enqueue(channel="idle")
    await cq.worker(channels=["default"]).run_once()

    assert await cq.clean(older_than=timedelta(hours=2)) == 0
    assert await cq.clean(older_than=timedelta(minutes=30)) == 3  # default state: completed
    assert all([await cq.get_job(i) is None for i in old])
    assert await cq.get_job(new) is not None
    assert await cq.get_job(old_failed) is not None
    clock.advance(1)
    assert await cq.clean(older_than=0, state="failed") == 1
    assert await cq.get_job(old_failed) is None
    assert await cq.clean(older_than=0, state="completed") == 1
    assert await cq.get_job(queued) is not None  # never cleaned: not finished
    with pytest.raises(conveyor.ValidationError):
        await cq.clean(older_than=-1)
    with pytest.raises(conveyor.ValidationError):
        await cq.clean(state="queued")


async def test_remove_on_complete_removes_at_once_but_keeps_failures(queue: conveyor.Queue) -> None:
    events = Events(queue)

    @queue.job("ephemeral", remove_on_complete=True)
    async def ephemeral(payload: bool, ctx: conveyor.Context) -> None:
        if not payload:
            raise ValueError("kept for inspection")

    ok = await ephemeral.enqueue(True)
    bad = await ephemeral.enqueue(False)
    await queue.worker().run_once()
    assert await queue.get_job(ok) is None
    job = await queue.get_job(bad)
    assert job is not None and job.state is JobState.FAILED
    assert {"completed", "removed"} <= set(events.types(ok))
    assert (await queue.counts())["completed"] == 0


def test_retention_settings_validate() -> None:
    for bad in (-1, "soon", timedelta(seconds=-5)):
        with pytest.raises(conveyor.ValidationError):
            conveyor.Queue("sqlite:///:memory:", keep_completed=bad)  # type: ignore[arg-type]
        with pytest.raises(conveyor.ValidationError):
            conveyor.Queue("sqlite:///:memory:", keep_failed=bad)  # type: ignore[arg-type]
    assert T0.tzinfo is not None


def test_zero_retention_is_allowed_and_means_the_next_maintenance_pass() -> None:
    q = conveyor.Queue("sqlite:///:memory:", keep_completed=0, keep_failed=timedelta(0))
    assert q.settings.keep_completed == 0.0
    assert q.settings.keep_failed == 0.0


async def test_a_short_retention_is_honoured_within_a_few_sweeps(store, clock: ManualClock) -> None:
    """keep_completed=1 s with a 0.2 s sweep: a running worker prunes the job about a
    second after it finished, not 30 s later (pruning follows the shortest retention)."""
    from tests.conformance._util import running
    from tests.conftest import wait_for

    q = store.queue(clock=clock, keep_completed=1, sweep_interval=0.2, poll_interval=0.1)

    @q.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    job_id = await ok.enqueue()
    async with running(q.worker()):

        async def done() -> bool:
            job = await q.get_job(job_id)
            return job is not None and job.state is JobState.COMPLETED

        await wait_for(done, 10)
        clock.advance(1.5)

        async def gone() -> bool:
            return await q.get_job(job_id) is None

        await wait_for(gone, 5)
