"""Durable multi-step jobs (DESIGN.md "Durable multi-step jobs"): steps memoised with the
job, sleeps and token waits that hold no worker slot, snooze. Driven by a ManualClock:
maintenance resumes what is due, ``run_once`` runs what is queued."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import Events, running, wait_state
from tests.conftest import Store


async def _state(queue: conveyor.Queue, job_id: int) -> JobState:
    job = await queue.get_job(job_id)
    assert job is not None
    return job.state


async def test_completed_steps_do_not_run_again_on_a_retry(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    calls: list[str] = []

    @cq.job("two-steps", attempts=3, backoff=conveyor.Backoff.fixed(5))
    async def two_steps(payload: Any, ctx: conveyor.Context) -> Any:
        a = await ctx.step("a", lambda: calls.append("a") or {"n": (1, 2)})

        async def flaky() -> str:
            calls.append("b")
            if ctx.attempt == 1:
                raise RuntimeError("b failed")
            return "B"

        b = await ctx.step("b", flaky)
        return [a, b]

    job_id = await two_steps.enqueue()
    assert await cq.worker().run_once() == 1
    assert await _state(cq, job_id) == JobState.SCHEDULED
    clock.advance(6)
    await cq.run_maintenance()
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.result, job.attempts) == (JobState.COMPLETED, [{"n": [1, 2]}, "B"], 2)
    assert calls == ["a", "b", "b"]  # a ran once; the failed b was not stored
    assert [(s["name"], s["result"]) for s in job.steps] == [("a", {"n": [1, 2]}), ("b", "B")]


async def test_a_step_result_that_is_not_json_fails_the_attempt_naming_the_step(
    cq: conveyor.Queue,
) -> None:
    @cq.job("bad-step")
    async def bad_step(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.step("make-set", lambda: {1, 2})

    job_id = await bad_step.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED
    assert job.last_error is not None
    assert job.last_error["type"] == "PayloadError" and "make-set" in job.last_error["message"]
    assert job.steps == ()


@pytest.mark.parametrize(
    ("names", "needle"),
    [(["x", "x"], "used twice"), (["conveyor:wait:1"], "reserved"), ([""], "non-empty")],
)
async def test_bad_step_names_are_refused(
    cq: conveyor.Queue, names: list[str], needle: str
) -> None:
    @cq.job("named-steps")
    async def named(payload: Any, ctx: conveyor.Context) -> None:
        for name in names:
            await ctx.step(name, lambda: 1)

    job_id = await named.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED and job.last_error is not None
    assert job.last_error["type"] == "ValidationError" and needle in job.last_error["message"]


async def test_a_sync_handler_is_told_steps_need_an_async_handler(cq: conveyor.Queue) -> None:
    @cq.job("sync-steps")
    def sync_steps(payload: Any, ctx: conveyor.Context) -> None:
        ctx.step("a", lambda: 1)

    job_id = await sync_steps.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.last_error is not None
    assert "async handler" in job.last_error["message"]


async def test_a_sleep_waits_in_storage_and_resumes_when_due(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    events = Events(cq)
    calls: list[str] = []

    @cq.job("cooling-off")
    async def cooling_off(payload: Any, ctx: conveyor.Context) -> str:
        await ctx.step("before", lambda: calls.append("before"))
        await ctx.sleep("1h")
        await ctx.step("after", lambda: calls.append("after"))
        return "done"

    job_id = await cooling_off.enqueue()
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts) == (JobState.WAITING, 0)
    assert job.run_at == datetime.fromtimestamp(clock.now() + 3600, UTC)
    assert (await cq.counts())["waiting"] == 1
    clock.advance(3599)
    await cq.run_maintenance()
    assert await _state(cq, job_id) == JobState.WAITING  # never before it is due
    assert await cq.worker().run_once() == 0
    clock.advance(1)
    await cq.run_maintenance()
    assert await _state(cq, job_id) == JobState.QUEUED
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.result, job.attempts) == (JobState.COMPLETED, "done", 1)
    assert calls == ["before", "after"]
    stored = [e.type for e in await cq.get_job_events(job_id)]
    assert stored == ["enqueued", "started", "waiting", "resumed", "started", "completed"]
    assert [t for t in events.types(job_id) if t in ("waiting", "resumed")] == [
        "waiting",
        "resumed",
    ]


async def test_sleep_until_an_aware_time_and_naive_times_are_refused(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    wake = datetime.fromtimestamp(clock.now(), UTC) + timedelta(minutes=10)

    @cq.job("until")
    async def until(payload: Any, ctx: conveyor.Context) -> str:
        if payload == "naive":
            await ctx.sleep_until(datetime(2030, 1, 1))
        await ctx.sleep_until(wake)
        return "woke"

    naive = await until.enqueue("naive")
    job_id = await until.enqueue("aware")
    await cq.worker().run_once()
    job = await cq.get_job(naive)
    assert (
        job is not None
        and job.last_error is not None
        and "timezone-aware" in job.last_error["message"]
    )
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.WAITING and job.run_at == wake
    clock.advance(600)
    await cq.run_maintenance()
    await cq.worker().run_once()
    assert (await cq.get_job(job_id)).result == "woke"  # type: ignore[union-attr]


async def test_a_waiting_job_holds_no_worker_slot(cq: conveyor.Queue) -> None:
    @cq.job("sleeper")
    async def sleeper(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.sleep("1d")

    @cq.job("other")
    async def other(payload: Any, ctx: conveyor.Context) -> str:
        return "ran"

    waiting = await sleeper.enqueue(priority=-1)  # first in line
    others = [await other.enqueue() for _ in range(3)]
    assert await cq.worker(concurrency=1).run_once() == 4
    assert await _state(cq, waiting) == JobState.WAITING
    for job_id in others:
        assert await _state(cq, job_id) == JobState.COMPLETED


async def test_a_token_resumes_its_job_with_the_data(cq: conveyor.Queue) -> None:
    asked: list[str] = []

    @cq.job("approve-refund", attempts=5)
    async def approve(payload: Any, ctx: conveyor.Context) -> Any:
        order = await ctx.step("load", lambda: {"order": payload["order"]})
        token = await ctx.create_token(timeout="48h", tags=["approval"])
        await ctx.step("ask", lambda: asked.append(token.id))
        decision = await ctx.wait_for_token(token)
        return {
            "order": order["order"],
            "ok": decision.ok,
            "data": decision.data,
            "token": token.id,
        }

    job_id = await approve.enqueue({"order": 7})
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.WAITING
    [token_id] = asked
    assert job.wait_token == token_id
    assert [t["id"] for t in job.tokens] == [token_id]
    token = await cq.get_token(token_id)
    assert token is not None
    assert (token.state, token.job_id, token.tags) == ("pending", job_id, ("approval",))

    assert await cq.complete_token(token_id, {"amount": 25}) is True
    assert await cq.complete_token(token_id, {"amount": 99}) is False  # once
    assert await cq.complete_token("no-such-token", 1) is False
    assert await _state(cq, job_id) == JobState.QUEUED
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.COMPLETED
    assert job.result == {"order": 7, "ok": True, "data": {"amount": 25}, "token": token_id}
    assert asked == [token_id]  # the re-run got the same token and did not ask again
    token = await cq.get_token(token_id)
    assert token is not None and (token.state, token.data) == ("completed", {"amount": 25})


async def test_a_token_that_times_out_resumes_with_ok_false(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("wait-an-hour")
    async def wait_an_hour(payload: Any, ctx: conveyor.Context) -> Any:
        token = await ctx.create_token(timeout=timedelta(hours=1))
        result = await ctx.wait_for_token(token)
        return [result.ok, result.data, token.id]

    job_id = await wait_an_hour.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state == JobState.WAITING
    token_id = job.wait_token
    assert token_id is not None
    clock.advance(3600)
    assert await cq.complete_token(token_id, "too late") is False  # expired at its deadline
    await cq.run_maintenance()
    token = await cq.get_token(token_id)
    assert token is not None and token.state == "expired"
    await cq.worker().run_once()
    assert (await cq.get_job(job_id)).result == [False, None, token_id]  # type: ignore[union-attr]


async def test_a_waiting_job_can_be_cancelled(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("long-wait")
    async def long_wait(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.sleep(60)

    job_id = await long_wait.enqueue()
    await cq.worker().run_once()
    assert await cq.cancel(job_id) is True
    clock.advance(120)
    await cq.run_maintenance()
    assert await cq.worker().run_once() == 0
    assert await _state(cq, job_id) == JobState.CANCELLED
    assert (await cq.counts())["waiting"] == 0


@pytest.mark.parametrize("how", ["sleep", "token", "snooze", "retry"])
async def test_a_cancel_that_comes_as_the_handler_suspends_or_fails_is_not_lost(
    cq: conveyor.Queue, store: Store, clock: ManualClock, how: str
) -> None:
    """The cancel lands (from another process: nothing tells this worker at once) after
    the worker's last look at its job and before the handler ends its attempt with a
    wait, a snooze or a retryable error: the job ends cancelled (never left waiting or
    queued with the request forgotten), and this process reports what was stored."""
    other = store.queue(clock=clock)

    @cq.job("cancelled-late", attempts=3)
    async def cancelled_late(payload: Any, ctx: conveyor.Context) -> None:
        assert await other.cancel(ctx.job_id) is True  # running: requested
        if how == "sleep":
            await ctx.sleep("1h")
        elif how == "token":
            await ctx.wait_for_token(await ctx.create_token(timeout="1h"))
        elif how == "snooze":
            raise conveyor.Snooze("1h")
        raise RuntimeError("flaky")

    events = Events(cq)
    job_id = await cancelled_late.enqueue()
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state == JobState.CANCELLED
    assert (await cq.counts())["waiting"] == 0
    seen = events.types(job_id)
    assert seen[-1] == "cancelled"
    assert not {"waiting", "snoozed", "retrying"} & set(seen), seen
    if how == "retry":
        assert [e["message"] for e in job.errors] == ["flaky"]  # why the attempt ended


async def test_snooze_runs_again_later_without_using_an_attempt(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    runs: list[int] = []

    @cq.job("snoozer")  # attempts=1
    async def snoozer(payload: Any, ctx: conveyor.Context) -> str:
        runs.append(ctx.attempt)
        if len(runs) < 3:
            raise conveyor.Snooze("30s")
        return "done"

    events = Events(cq)
    job_id = await snoozer.enqueue()
    for _ in range(2):
        assert await cq.worker().run_once() == 1
        job = await cq.get_job(job_id)
        assert job is not None and (job.state, job.attempts) == (JobState.SCHEDULED, 0)
        assert await cq.worker().run_once() == 0  # not before its time
        clock.advance(30)
        await cq.run_maintenance()
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.errors) == (JobState.COMPLETED, 1, ())
    assert runs == [1, 1, 1]
    assert events.types(job_id).count("snoozed") == 2


async def test_three_maintenance_processes_resume_a_due_job_once(
    store: Any, clock: ManualClock
) -> None:
    queues = [store.queue(clock=clock) for _ in range(3)]
    await queues[0].migrate()

    @queues[0].job("nap")
    async def nap(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.sleep(5)

    ids = [await nap.enqueue() for _ in range(5)]
    await queues[0].worker().run_once()
    clock.advance(5)
    await asyncio.gather(*(q.run_maintenance() for q in queues))
    for job_id in ids:
        assert [e.type for e in await queues[0].get_job_events(job_id)].count("resumed") == 1
        assert await _state(queues[0], job_id) == JobState.QUEUED
    for q in queues:
        await q.close()


async def test_cleaning_a_job_removes_its_steps_and_tokens(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("tokened")
    async def tokened(payload: Any, ctx: conveyor.Context) -> str:
        token = await ctx.create_token()
        return token.id

    job_id = await tokened.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and len(job.steps) == 1
    token_id = job.result
    assert await cq.get_token(token_id) is not None
    clock.advance(10)
    assert await cq.clean(older_than=0, state="completed") == 1
    assert await cq.get_token(token_id) is None


async def test_a_real_time_sleep_resumes_no_earlier_than_due(queue: conveyor.Queue) -> None:
    woke: list[float] = []

    @queue.job("short-nap")
    async def short_nap(payload: Any, ctx: conveyor.Context) -> None:
        started = await ctx.step("started", time.time)
        await ctx.sleep(0.6)
        woke.append(time.time() - started)

    job_id = await short_nap.enqueue()
    async with running(queue.worker()):
        await wait_state(queue, job_id, JobState.COMPLETED, timeout=20)
    assert len(woke) == 1 and woke[0] >= 0.6
