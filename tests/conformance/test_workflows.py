"""Workflows (DESIGN.md "Workflows: dependencies and batches", "Uniqueness windows"):
dependencies with results and cascading failure, batches whose callback runs once with
the counts, and idempotency keys that dedupe only within a window or in some states."""

from __future__ import annotations

from typing import Any

import pytest

import conveyor
from conveyor import JobSpec, JobState
from conveyor.testing import ManualClock


async def _state(q: conveyor.Queue, job_id: int) -> JobState:
    job = await q.get_job(job_id)
    assert job is not None
    return job.state


async def test_a_diamond_runs_in_order_and_the_join_sees_both_results(cq: conveyor.Queue) -> None:
    order: list[str] = []
    seen: dict[int, Any] = {}

    @cq.job("step")
    async def step(payload: str, ctx: conveyor.Context) -> str:
        order.append(payload)
        if payload == "D":
            seen.update(await ctx.dependency_results())
        return payload.lower()

    a = JobSpec("step", "A")
    b = JobSpec("step", "B", depends_on=[a])
    c = JobSpec("step", "C", depends_on=[a])
    d = JobSpec("step", "D", depends_on=[b, c])
    ids = await cq.enqueue_many([a, b, c, d])
    assert [await _state(cq, i) for i in ids] == [JobState.QUEUED, *[JobState.WAITING] * 3]
    job_d = await cq.get_job(ids[3])
    assert job_d is not None and job_d.depends_on == (ids[1], ids[2])
    while await cq.worker().run_once():
        pass
    assert order[0] == "A" and order[-1] == "D" and sorted(order[1:3]) == ["B", "C"]
    assert seen == {ids[1]: "b", ids[2]: "c"}


async def test_a_failed_dependency_cancels_its_dependents_unless_told_to_run(
    cq: conveyor.Queue,
) -> None:
    @cq.job("maybe")
    async def maybe(payload: str, ctx: conveyor.Context) -> str:
        if payload == "fail":
            raise conveyor.Fatal("no")
        return payload

    a = await cq.enqueue("maybe", "fail")
    d = await cq.enqueue("maybe", "d", depends_on=[a])
    e = await cq.enqueue("maybe", "e", depends_on=[d])
    anyway = await cq.enqueue("maybe", "anyway", depends_on=[a], on_dependency_failure="run")
    while await cq.worker().run_once():
        pass
    assert await _state(cq, a) == JobState.FAILED
    assert await _state(cq, d) == JobState.CANCELLED
    assert await _state(cq, e) == JobState.CANCELLED
    events = await cq.get_job_events(d)
    assert dict(events[-1].data)["reason"] == "dependency_failed"
    assert await _state(cq, anyway) == JobState.COMPLETED


async def test_unknown_ids_and_cycles_are_refused_with_nothing_written(cq: conveyor.Queue) -> None:
    known = await cq.enqueue("x", {})
    with pytest.raises(conveyor.ValidationError, match="unknown dependency"):
        await cq.enqueue_many([JobSpec("x", 1), JobSpec("x", 2, depends_on=[known, 999_999_999])])
    first = JobSpec("x", "first")
    later = JobSpec("x", "later")
    with pytest.raises(conveyor.ValidationError, match="earlier"):
        await cq.enqueue_many([JobSpec("x", "a", depends_on=[later]), later])
    with pytest.raises(conveyor.ValidationError, match="earlier"):  # not in this call
        await cq.enqueue_many([JobSpec("x", "s", depends_on=[first])])
    with pytest.raises(conveyor.ValidationError, match="depends_on"):
        await cq.enqueue("x", depends_on=[0])
    assert [j.id for j in await cq.list_jobs()] == [known]


async def test_a_batch_callback_runs_once_with_the_counts(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    batches: list[Any] = []

    @cq.job("member", attempts=2, backoff=conveyor.Backoff.fixed(30))
    async def member(payload: str, ctx: conveyor.Context) -> None:
        if payload == "fail":
            raise RuntimeError("member failed")

    @cq.job("report")
    async def report(payload: Any, ctx: conveyor.Context) -> None:
        batches.append(ctx.batch)

    batch = await cq.enqueue_batch(
        [JobSpec("member", "ok"), JobSpec("member", "ok"), JobSpec("member", "fail")],
        on_complete=JobSpec("report", {"to": "ops"}),
    )
    assert (batch.total, batch.state, len(batch.job_ids)) == (3, "running", 3)
    await cq.worker().run_once()  # two complete, one fails and will retry in 30 s
    current = await cq.get_batch(batch.id)
    assert current is not None and (current.completed, current.failed, current.state) == (
        2,
        0,
        "running",
    )
    assert batches == []  # never while a member is still retrying
    clock.advance(30)
    await cq.run_maintenance()
    await cq.worker().run_once()
    await cq.worker().run_once()
    current = await cq.get_batch(batch.id)
    assert current is not None and (current.completed, current.failed, current.state) == (
        2,
        1,
        "done",
    )
    assert batches == [{"id": batch.id, "total": 3, "completed": 2, "failed": 1, "cancelled": 0}]
    assert await cq.get_batch("nope") is None


async def test_unique_for_lets_a_second_enqueue_through_after_the_window(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    first = await cq.enqueue("digest", {}, idempotency_key="daily", unique_for="1h")
    clock.advance(3599)
    assert await cq.enqueue("digest", {}, idempotency_key="daily", unique_for="1h") == first
    clock.advance(1)
    second = await cq.enqueue("digest", {}, idempotency_key="daily", unique_for="1h")
    assert second != first
    with pytest.raises(conveyor.ValidationError, match="idempotency_key"):
        await cq.enqueue("digest", {}, unique_for="1h")
    with pytest.raises(conveyor.ValidationError, match="unique_states"):
        await cq.enqueue("digest", {}, idempotency_key="k", unique_states=["sleeping"])
