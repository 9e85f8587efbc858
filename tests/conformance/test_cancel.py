"""cancel(): upcoming, running (async and sync, same or another process), finished;
cancel_jobs() by tags and filters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import conveyor
from conveyor import JobState
from tests.conformance._util import Events, running, wait_state
from tests.conftest import wait_for


async def test_cancel_upcoming_jobs(queue: conveyor.Queue) -> None:
    events = Events(queue)
    ran: list[int] = []

    @queue.job("upcoming")
    async def upcoming(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.job_id)

    queued = await upcoming.enqueue()
    scheduled = await upcoming.enqueue(delay=3600)
    kept = await upcoming.enqueue()
    assert await queue.cancel(queued) is True
    assert await queue.cancel(scheduled) is True
    for job_id in (queued, scheduled):
        job = await queue.get_job(job_id)
        assert job is not None and job.state is JobState.CANCELLED and job.finished_at is not None
        assert [e.type for e in await queue.get_job_events(job_id)] == ["enqueued", "cancelled"]
    assert sorted(e.job_id for e in events.of("cancelled")) == sorted([queued, scheduled])
    assert await queue.worker().run_once() == 1
    assert ran == [kept]


async def test_cancel_finished_or_unknown_returns_false(queue: conveyor.Queue) -> None:
    @queue.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    @queue.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("x")

    done = await ok.enqueue()
    failed = await bad.enqueue()
    cancelled = await ok.enqueue(delay=60)
    assert await queue.cancel(cancelled) is True
    await queue.worker().run_once()
    assert await queue.cancel(done) is False
    assert await queue.cancel(failed) is False
    assert await queue.cancel(cancelled) is False
    assert await queue.cancel(10**9) is False
    assert (await queue.get_job(done)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await queue.get_job(failed)).state is JobState.FAILED  # type: ignore[union-attr]


@pytest.mark.parametrize("from_other_process", [False, True])
async def test_cancel_a_running_async_job(
    store, queue: conveyor.Queue, from_other_process: bool
) -> None:
    entered = asyncio.Event()
    seen: dict[str, object] = {}

    @queue.job("long", attempts=3)
    async def long(payload: object, ctx: conveyor.Context) -> str:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled"] = ctx.cancelled
            raise
        return "finished"

    job_id = await long.enqueue()
    canceller = store.queue() if from_other_process else queue
    async with running(queue.worker()) as task:
        await asyncio.wait_for(entered.wait(), 10)
        t0 = time.monotonic()
        assert await canceller.cancel(job_id) is True
        job = await wait_state(
            queue, job_id, JobState.CANCELLED, JobState.COMPLETED, JobState.FAILED, timeout=10
        )
        assert time.monotonic() - t0 < 5
        assert not task.done()
    assert job.state is JobState.CANCELLED
    assert seen == {"cancelled": True}
    assert job.attempts == 1
    assert job.finished_at is not None
    assert [e.type for e in await queue.get_job_events(job_id)][-1] == "cancelled"
    assert await queue.cancel(job_id) is False


async def test_cancel_a_running_sync_job_sets_ctx_cancelled(queue: conveyor.Queue) -> None:
    entered = threading.Event()
    noticed = threading.Event()

    @queue.job("sync-long")
    def sync_long(payload: object, ctx: conveyor.Context) -> str:
        entered.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                noticed.set()
                return "stopped early"
            time.sleep(0.01)
        return "never told"

    job_id = await sync_long.enqueue()
    async with running(queue.worker()):
        await wait_for(entered.is_set)
        assert await queue.cancel(job_id) is True
        await wait_for(noticed.is_set, 5)
        job = await wait_state(
            queue, job_id, JobState.CANCELLED, JobState.COMPLETED, JobState.FAILED
        )
    assert job.state is JobState.CANCELLED


async def test_cancelled_running_job_is_not_retried(queue: conveyor.Queue) -> None:
    entered = asyncio.Event()
    runs: list[int] = []

    @queue.job("no-retry", attempts=5)
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        runs.append(ctx.attempt)
        entered.set()
        await asyncio.sleep(30)

    @queue.job("marker")
    async def marker_job(payload: object, ctx: conveyor.Context) -> None:
        return None

    job_id = await handler.enqueue()
    async with running(queue.worker()):
        await asyncio.wait_for(entered.wait(), 10)
        await queue.cancel(job_id)
        await wait_state(queue, job_id, JobState.CANCELLED)
        # The worker goes round again (it runs a later job) and still does not rerun it.
        marker = await queue.enqueue("marker")
        await wait_state(queue, marker, JobState.COMPLETED)
    assert runs == [1]
    assert (await queue.get_job(job_id)).state is JobState.CANCELLED  # type: ignore[union-attr]


# -- cancel_jobs ---------------------------------------------------------------------------------
TAGGED = {"a": ["x"], "ab": ["x", "y"], "abc": ["x", "y", "z"], "c": ["z"], "none": []}


async def _tagged(queue: conveyor.Queue) -> dict[str, int]:
    return {
        key: await queue.enqueue("tagged", key, tags=tags, delay=3600)
        for key, tags in TAGGED.items()
    }


@pytest.mark.parametrize(
    ("tags", "mode", "expected"),
    [
        (["x"], "any", {"a", "ab", "abc"}),
        (["y", "z"], "any", {"ab", "abc", "c"}),
        (["x", "y"], "all", {"ab", "abc"}),
        (["y", "x"], "exact", {"ab"}),
        (["x"], "exact", {"a"}),
        (["x"], "none", {"c", "none"}),
        (["q"], "any", set()),
    ],
)
async def test_cancel_jobs_by_tags(
    queue: conveyor.Queue, tags: list[str], mode: str, expected: set[str]
) -> None:
    ids = await _tagged(queue)
    assert await queue.cancel_jobs(tags=tags, tag_mode=mode) == len(expected)
    for key, job_id in ids.items():
        job = await queue.get_job(job_id)
        assert job is not None
        assert (job.state is JobState.CANCELLED) == (key in expected), key


async def test_cancel_jobs_default_mode_is_any(queue: conveyor.Queue) -> None:
    ids = await _tagged(queue)
    assert await queue.cancel_jobs(tags=["y", "z"]) == 3
    assert (await queue.get_job(ids["a"])).state is JobState.SCHEDULED  # type: ignore[union-attr]


async def test_cancel_jobs_touches_upcoming_jobs_only(queue: conveyor.Queue) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @queue.job("t")
    async def t(payload: str, ctx: conveyor.Context) -> None:
        if payload == "running":
            entered.set()
            await release.wait()

    done = await t.enqueue("done", tags=["batch"])
    await queue.worker().run_once()
    running_id = await t.enqueue("running", tags=["batch"])
    async with running(queue.worker()):
        await asyncio.wait_for(entered.wait(), 10)
        queued = await t.enqueue("queued", tags=["batch"], delay=3600)
        scheduled = await t.enqueue("scheduled", tags=["batch"], delay=7200)
        other = await t.enqueue("other", tags=["other"], delay=3600)
        assert await queue.cancel_jobs(tags=["batch"]) == 2
        assert (await queue.get_job(running_id)).state is JobState.RUNNING  # type: ignore[union-attr]
        release.set()
        await wait_state(queue, running_id, JobState.COMPLETED)
    assert (await queue.get_job(done)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await queue.get_job(queued)).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert (await queue.get_job(scheduled)).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert (await queue.get_job(other)).state is JobState.SCHEDULED  # type: ignore[union-attr]


async def test_cancel_jobs_by_name_channel_and_tenant(queue: conveyor.Queue) -> None:
    a = await queue.enqueue("report", None, channel="c1", tenant="t1", delay=60)
    b = await queue.enqueue("report", None, channel="c2", tenant="t1", delay=60)
    c = await queue.enqueue("email", None, channel="c1", tenant="t2", delay=60)
    d = await queue.enqueue("email", None, channel="c2", tenant="t2", delay=60)
    assert await queue.cancel_jobs(name="report", channel="c2") == 1
    assert await queue.cancel_jobs(tenant="t2", channel="c1") == 1
    states = {j: (await queue.get_job(j)).state for j in (a, b, c, d)}  # type: ignore[union-attr]
    assert states == {
        a: JobState.SCHEDULED,
        b: JobState.CANCELLED,
        c: JobState.CANCELLED,
        d: JobState.SCHEDULED,
    }
    assert await queue.cancel_jobs(tags=["nothing"]) == 0
