"""Inspection: get_job, list_jobs filters, counts, get_job_logs, get_job_events."""

from __future__ import annotations

import asyncio

import conveyor
from conveyor import Backoff, JobState
from conveyor.testing import drain


async def test_get_job_unknown_is_none(queue: conveyor.Queue) -> None:
    assert await queue.get_job(424242) is None
    assert await queue.get_job_logs(424242) == []
    assert await queue.get_job_events(424242) == []


async def test_list_jobs_filters_newest_first(queue: conveyor.Queue) -> None:
    a = await queue.enqueue("alpha", 1, tenant="t1", channel="c1")
    b = await queue.enqueue("beta", 2, tenant="t2", channel="c1", delay=60)
    c = await queue.enqueue("alpha", 3, tenant="t2", channel="c2")
    d = await queue.enqueue("alpha", 4, tenant="t1", channel="c2", delay=60)
    assert [j.id for j in await queue.list_jobs()] == [d, c, b, a]
    assert [j.id for j in await queue.list_jobs(name="alpha")] == [d, c, a]
    assert [j.id for j in await queue.list_jobs(state="scheduled")] == [d, b]
    assert [j.id for j in await queue.list_jobs(state=JobState.QUEUED)] == [c, a]
    assert [j.id for j in await queue.list_jobs(tenant="t1")] == [d, a]
    assert [j.id for j in await queue.list_jobs(channel="c2", tenant="t2")] == [c]
    assert [
        j.id for j in await queue.list_jobs(name="alpha", state="queued", channel="c1", tenant="t1")
    ] == [a]
    assert await queue.list_jobs(name="gamma") == []
    assert [j.id for j in await queue.list_jobs(limit=2)] == [d, c]
    page2 = await queue.list_jobs(limit=2, before_id=c)
    assert [j.id for j in page2] == [b, a]
    found = (await queue.list_jobs(name="beta"))[0]
    assert found == await queue.get_job(b)


async def test_counts_every_state(queue: conveyor.Queue) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    @queue.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    @queue.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("x")

    @queue.job("hold")
    async def hold(payload: object, ctx: conveyor.Context) -> None:
        entered.set()
        await release.wait()

    empty = await queue.counts()
    assert empty == {s.value: 0 for s in JobState}
    await ok.enqueue()
    await ok.enqueue()
    await bad.enqueue()
    await queue.worker().run_once()
    await ok.enqueue(delay=60)
    cancelled = await ok.enqueue(delay=60)
    await queue.cancel(cancelled)
    await ok.enqueue(channel="not-run")
    await hold.enqueue()
    worker = queue.worker(channels=["default"])
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(entered.wait(), 10)
    counts = await queue.counts()
    release.set()
    await worker.stop()
    await task
    assert counts == {
        "scheduled": 1,
        "queued": 1,
        "running": 1,
        "waiting": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 1,
    }


async def test_logs_are_kept_per_attempt_in_order(queue: conveyor.Queue) -> None:
    @queue.job("chatty", attempts=2, backoff=Backoff.fixed(0))
    async def chatty(payload: object, ctx: conveyor.Context) -> str:
        ctx.log.debug("debug %d", ctx.attempt)
        ctx.log.info("info %s", "ü")
        ctx.log.warning("warning")
        ctx.log.error("error %r", {"a": 1})
        if ctx.attempt == 1:
            ctx.log.critical("failing now")
            raise ValueError("first")
        return "ok"

    job_id = await chatty.enqueue()
    await drain(queue)
    logs = await queue.get_job_logs(job_id)
    assert [(r.attempt, r.level, r.message) for r in logs] == [
        (1, "debug", "debug 1"),
        (1, "info", "info ü"),
        (1, "warning", "warning"),
        (1, "error", "error {'a': 1}"),
        (1, "critical", "failing now"),
        (2, "debug", "debug 2"),
        (2, "info", "info ü"),
        (2, "warning", "warning"),
        (2, "error", "error {'a': 1}"),
    ]
    assert all(r.at.tzinfo is not None for r in logs)
    assert [r.at for r in logs] == sorted(r.at for r in logs)


async def test_logs_of_a_sync_handler_and_a_failed_attempt(queue: conveyor.Queue) -> None:
    @queue.job("sync-chatty")
    def handler(payload: object, ctx: conveyor.Context) -> None:
        ctx.log.info("before the crash")
        raise RuntimeError("crash")

    job_id = await handler.enqueue()
    await queue.worker().run_once()
    assert [r.message for r in await queue.get_job_logs(job_id)] == ["before the crash"]


async def test_events_are_stored_in_order(queue: conveyor.Queue) -> None:
    @queue.job("story", attempts=2, backoff=Backoff.fixed(0))
    async def story(payload: object, ctx: conveyor.Context) -> str:
        await ctx.set_progress(10)
        if ctx.attempt == 1:
            raise ValueError("again")
        await ctx.set_progress(90)
        return "end"

    job_id = await story.enqueue(tenant="acme")
    await drain(queue)
    events = await queue.get_job_events(job_id)
    assert [(e.type, e.attempt) for e in events] == [
        ("enqueued", 0),
        ("started", 1),
        ("progress", 1),
        ("retrying", 1),
        ("started", 2),
        ("progress", 2),
        ("progress", 2),
        ("completed", 2),
    ]
    assert all(e.job_id == job_id and e.job_name == "story" and e.tenant == "acme" for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert [e.data.get("progress") for e in events if e.type == "progress"] == [10, 10, 90]


async def test_job_timestamps(queue: conveyor.Queue) -> None:
    @queue.job("ts")
    async def ts(payload: object, ctx: conveyor.Context) -> None:
        await asyncio.sleep(0.01)

    job_id = await ts.enqueue()
    await queue.worker().run_once()
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at
    assert all(
        t.tzinfo is not None for t in (job.created_at, job.run_at, job.started_at, job.finished_at)
    )


async def test_counts_agree_with_the_jobs_after_every_kind_of_transition(cq) -> None:  # type: ignore[no-untyped-def]
    """counts() (kept incrementally by some backends) always equals what list_jobs sees."""
    from conveyor.backends.base import ClaimParams

    clock = cq.clock

    @cq.job("ok", channel="a")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    @cq.job("flaky", channel="b", attempts=2, backoff=Backoff.fixed(30))
    async def flaky(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("x")

    @cq.job("fatal", channel="b")
    async def fatal(payload: object, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("x")

    await cq.enqueue_many([conveyor.JobSpec("ok") for _ in range(4)])
    await cq.enqueue_many([conveyor.JobSpec("flaky") for _ in range(3)])
    await fatal.enqueue()
    await ok.enqueue(remove_on_complete=True)
    await ok.enqueue(delay=600)
    cancelled = await ok.enqueue(delay=600)
    await cq.cancel(cancelled)
    stuck = await ok.enqueue(channel="c", attempts=3)
    await ok.enqueue(channel="never", delay=5)
    backend = await cq.engine.backend()
    await backend.claim(
        ClaimParams(worker_id="dead", token="dead", limit=1, now=clock.now(), lease_expires_at=clock.now() + 2,
                    channels=("c",))
    )  # fmt: skip
    await cq.worker(channels=["a", "b"]).run_once()  # completes, retries (scheduled), fails
    clock.advance(10)  # "never" is due (promoted), the dead lease expired (rescued)
    await cq.run_maintenance()
    await cq.retry(cancelled)
    clock.advance(60)
    await cq.run_maintenance()  # flaky retries due
    await cq.worker(channels=["b"]).run_once()  # flaky fail for good
    assert (await cq.get_job(stuck)).state is JobState.QUEUED  # type: ignore[union-attr]

    async def by_list(channel: str | None = None) -> dict[str, int]:
        out = {s.value: 0 for s in JobState}
        for s in JobState:
            jobs = await cq.list_jobs(state=s, channel=channel, limit=10_000)
            out[s.value] = len(jobs)
        return out

    assert await cq.counts() == await by_list()
    for channel in ("a", "b", "c", "never", "default"):
        assert await cq.counts(channel=channel) == await by_list(channel), channel
    assert (await cq.counts())["failed"] == 4
    clock.advance(30 * 86400)
    await cq.run_maintenance()  # retention prunes every finished job
    assert await cq.counts() == await by_list()
    assert (await cq.counts())["failed"] == 0 and (await cq.counts())["completed"] == 0
