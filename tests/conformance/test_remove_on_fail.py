"""remove_on_fail: a job deleted when it finally fails, as remove_on_complete deletes one
on success (its events stay readable, a ``removed`` event follows, counts drop it)."""

from __future__ import annotations

import asyncio

import pytest

import conveyor
from conveyor import JobSpec, JobState
from conveyor.backends.base import ClaimParams
from conveyor.testing import ManualClock
from tests.conformance._util import Events, total


def _stored(events: list[conveyor.Event]) -> list[str]:
    return [e.type for e in events]


async def _gone(queue: conveyor.Queue, job_id: int) -> None:
    assert await queue.get_job(job_id) is None
    assert job_id not in [j.id for j in await queue.list_jobs()]


async def test_a_final_failure_removes_the_job_and_keeps_its_events(cq: conveyor.Queue) -> None:
    events = Events(cq)

    @cq.job("flaky")
    async def flaky(payload: bool, ctx: conveyor.Context) -> None:
        ctx.log.info("trying")
        if not payload:
            raise ValueError("no luck")

    failed = await flaky.enqueue(False, remove_on_fail=True, idempotency_key="k")
    done = await flaky.enqueue(True, remove_on_complete=True)  # the same, on success
    assert await cq.worker().run_once() == 2

    await _gone(cq, failed)
    assert await cq.get_job_logs(failed) == []  # logs go with the job
    stored = await cq.get_job_events(failed)
    assert _stored(stored)[-2:] == ["started", "failed"]
    assert stored[-1].attempt == 1
    # exactly what a remove_on_complete job keeps, but for the last event
    assert _stored(stored)[:-1] == _stored(await cq.get_job_events(done))[:-1]
    assert events.types(failed)[-2:] == ["failed", "removed"]
    assert events.types(done)[-2:] == ["completed", "removed"]
    assert await total(cq) == 0
    assert (await cq.counts())["failed"] == 0
    # the idempotency key is free again, as after any removal
    assert await flaky.enqueue(False, idempotency_key="k") != failed


async def test_a_failed_attempt_with_a_retry_left_keeps_the_job(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    events = Events(cq)

    @cq.job("second-time-lucky", attempts=2, backoff=conveyor.Backoff.fixed(10))
    async def lucky(payload: object, ctx: conveyor.Context) -> int:
        if ctx.attempt == 1:
            raise ValueError("first try fails")
        return ctx.attempt

    job_id = await lucky.enqueue(remove_on_fail=True)
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.SCHEDULED and len(job.errors) == 1
    clock.advance(11)
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == 2
    assert "removed" not in events.types(job_id)
    assert (await cq.counts())["completed"] == 1


async def test_remove_on_fail_false_keeps_the_failed_job(cq: conveyor.Queue) -> None:
    events = Events(cq)

    @cq.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    explicit = await bad.enqueue(remove_on_fail=False)
    default = await bad.enqueue()
    assert await cq.worker().run_once() == 2
    for job_id in (explicit, default):
        job = await cq.get_job(job_id)
        assert job is not None and job.state is JobState.FAILED
        assert "removed" not in events.types(job_id)
    assert (await cq.counts())["failed"] == 2


async def test_the_definition_default_and_the_enqueue_override(cq: conveyor.Queue) -> None:
    @cq.job("removed-by-default", remove_on_fail=True)
    async def removed(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    @cq.job("kept-by-default")
    async def kept(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    by_default = await removed.enqueue()
    by_name = await cq.enqueue("removed-by-default", None)
    overridden = await removed.enqueue(remove_on_fail=False)
    asked = await kept.enqueue(remove_on_fail=True)
    not_asked = await kept.enqueue()
    in_batch = await cq.enqueue_many(
        [
            JobSpec("kept-by-default", None, remove_on_fail=True),
            JobSpec("removed-by-default", None, remove_on_fail=False),
            JobSpec("removed-by-default", None, tags=["other-options-too"]),
        ]
    )
    assert await cq.worker().run_once() == 8
    for gone in (by_default, by_name, asked, in_batch[0], in_batch[2]):
        await _gone(cq, gone)
    for stays in (overridden, not_asked, in_batch[1]):
        job = await cq.get_job(stays)
        assert job is not None and job.state is JobState.FAILED
    assert (await cq.counts())["failed"] == 3


async def test_every_final_failure_removes(cq: conveyor.Queue) -> None:
    """Fatal (with attempts left), a timeout on the last attempt, a job no handler
    exists for (orphaned)."""
    events = Events(cq)
    orphan = await cq.enqueue("nobody-handles-this", None, remove_on_fail=True)

    @cq.job("fatal", attempts=3)
    async def fatal(payload: object, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("give up now")

    @cq.job("slow", timeout=0.2)
    async def slow(payload: object, ctx: conveyor.Context) -> None:
        await asyncio.sleep(30)

    gave_up = await fatal.enqueue(remove_on_fail=True)
    timed_out = await slow.enqueue(remove_on_fail=True)
    assert await cq.worker().run_once() == 3
    for job_id, event in ((gave_up, "failed"), (timed_out, "failed"), (orphan, "orphaned")):
        await _gone(cq, job_id)
        assert _stored(await cq.get_job_events(job_id))[-2:] == ["started", event]
        assert events.types(job_id)[-2:] == [event, "removed"]
    assert await total(cq) == 0


async def test_a_rescue_that_fails_the_job_removes_it(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    events = Events(cq)
    failing = await cq.enqueue("abandoned", None, attempts=1, max_stalls=0, remove_on_fail=True)
    requeued = await cq.enqueue("abandoned", None, attempts=1, max_stalls=1, remove_on_fail=True)
    backend = await cq.engine.backend()
    now = clock.now()
    claim = ClaimParams(worker_id="w", token="dead", limit=10, now=now, lease_expires_at=now + 2)
    assert {j.id for j in await backend.claim(claim)} == {failing, requeued}
    clock.advance(5)
    await cq.run_maintenance()
    await _gone(cq, failing)
    assert _stored(await cq.get_job_events(failing))[-2:] == ["started", "stalled"]
    assert events.types(failing)[-3:] == ["stalled", "failed", "removed"]
    job = await cq.get_job(requeued)  # rescued back to the queue: kept
    assert job is not None and job.state is JobState.QUEUED
    assert "removed" not in events.types(requeued)
    assert (await cq.counts())["failed"] == 0


@pytest.mark.parametrize("value", ["yes", 1, "false"])
async def test_a_bad_value_is_refused_naming_the_option(cq: conveyor.Queue, value: object) -> None:
    with pytest.raises(conveyor.ValidationError, match="remove_on_fail"):
        await cq.enqueue("anything", None, remove_on_fail=value)
    bad = JobSpec("anything", None, remove_on_fail=value)  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError, match="remove_on_fail"):
        await cq.enqueue_many([JobSpec("anything", None), bad])
    with pytest.raises(conveyor.ValidationError, match="remove_on_fail"):
        cq.job("badly-defined", remove_on_fail=value)(print)  # type: ignore[arg-type]
    assert await total(cq) == 0
