"""The worker: concurrency, async and sync handlers, results, misbehaving handlers,
orphaned and undecodable rows, channels and names, graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import conveyor
from conveyor import Backoff, JobState
from tests.conformance import _raw
from tests.conformance._util import Concurrency, Events, running, wait_state
from tests.conftest import wait_for


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_is_never_exceeded(queue: conveyor.Queue, concurrency: int) -> None:
    gauge = Concurrency()

    @queue.job("work")
    async def work(payload: object, ctx: conveyor.Context) -> None:
        gauge.enter()
        try:
            await asyncio.sleep(0.03)
        finally:
            gauge.exit()

    await queue.enqueue_many([conveyor.JobSpec("work", i) for i in range(4 * concurrency)])
    assert await queue.worker(concurrency=concurrency).run_once() == 4 * concurrency
    assert gauge.calls == 4 * concurrency
    assert gauge.max == concurrency


async def test_concurrency_is_respected_for_sync_handlers(queue: conveyor.Queue) -> None:
    gauge = Concurrency()

    @queue.job("sync-work")
    def work(payload: object, ctx: conveyor.Context) -> None:
        gauge.enter()
        try:
            time.sleep(0.03)
        finally:
            gauge.exit()

    await queue.enqueue_many([conveyor.JobSpec("sync-work", i) for i in range(8)])
    assert await queue.worker(concurrency=2).run_once() == 8
    assert gauge.max == 2


async def test_worker_fetches_only_for_free_slots(queue: conveyor.Queue) -> None:
    release = asyncio.Event()
    started: list[int] = []

    @queue.job("block")
    async def block(payload: object, ctx: conveyor.Context) -> None:
        started.append(ctx.job_id)
        await release.wait()

    await queue.enqueue_many([conveyor.JobSpec("block", i) for i in range(5)])
    async with running(queue.worker(concurrency=2)):
        await wait_for(lambda: len(started) == 2)
        counts = await queue.counts()
        assert counts["running"] == 2
        assert counts["queued"] == 3
        release.set()
        await wait_for(lambda: len(started) == 5)
        await wait_for(lambda: _completed(queue, 5))


async def _completed(queue: conveyor.Queue, n: int) -> bool:
    return (await queue.counts())["completed"] == n


async def test_async_and_sync_handlers_results_progress_and_logs(queue: conveyor.Queue) -> None:
    threads: dict[str, str] = {}

    @queue.job("async-job")
    async def async_job(payload: dict, ctx: conveyor.Context) -> dict:
        threads["async"] = threading.current_thread().name
        await ctx.set_progress(40)
        ctx.log.info("async %s", payload["n"])
        return {"n": payload["n"], "kind": "async", "ü": "✓"}

    @queue.job("sync-job")
    def sync_job(payload: dict, ctx: conveyor.Context) -> list:
        threads["sync"] = threading.current_thread().name
        ctx.set_progress(60)  # from a worker thread: returns once stored
        ctx.log.warning("sync %d", payload["n"])
        return [payload["n"], "sync"]

    a = await async_job.enqueue({"n": 1})
    s = await sync_job.enqueue({"n": 2})
    assert await queue.worker().run_once() == 2
    ja, js = await queue.get_job(a), await queue.get_job(s)
    assert ja is not None and js is not None
    assert ja.state is JobState.COMPLETED and ja.result == {"n": 1, "kind": "async", "ü": "✓"}
    assert js.state is JobState.COMPLETED and js.result == [2, "sync"]
    assert threads["sync"] != threading.main_thread().name  # plain def runs in a thread pool
    assert threads["async"] == threading.main_thread().name
    assert ja.progress == 100 and js.progress == 100
    assert ja.attempts == 1 and ja.started_at is not None and ja.finished_at is not None
    assert ja.started_at <= ja.finished_at
    assert [(r.level, r.message, r.attempt) for r in await queue.get_job_logs(a)] == [
        ("info", "async 1", 1)
    ]
    assert [(r.level, r.message, r.attempt) for r in await queue.get_job_logs(s)] == [
        ("warning", "sync 2", 1)
    ]
    progress = [e.data for e in await queue.get_job_events(s) if e.type == "progress"]
    assert progress == [{"progress": 60}]


async def test_none_result_and_non_json_result(queue: conveyor.Queue) -> None:
    @queue.job("none")
    async def none(payload: object, ctx: conveyor.Context) -> None:
        return None

    @queue.job("not-json")
    async def not_json(payload: object, ctx: conveyor.Context) -> object:
        return {"when": object()}

    n = await none.enqueue()
    j = await not_json.enqueue()
    await queue.worker().run_once()
    jn, jj = await queue.get_job(n), await queue.get_job(j)
    assert jn is not None and jn.state is JobState.COMPLETED and jn.result is None
    assert jj is not None and jj.state is JobState.FAILED
    assert jj.last_error is not None and "JSON" in jj.last_error["message"]


async def test_progress_is_visible_while_running(queue: conveyor.Queue) -> None:
    go = asyncio.Event()
    refused: list[bool] = []

    @queue.job("slow")
    async def slow(payload: object, ctx: conveyor.Context) -> None:
        await ctx.set_progress(37)
        for bad in (101, -1, True, "50"):
            try:
                await ctx.set_progress(bad)  # type: ignore[arg-type]
            except conveyor.ValidationError:
                refused.append(True)
        await go.wait()

    job_id = await slow.enqueue()
    async with running(queue.worker()):

        async def at_37() -> bool:
            job = await queue.get_job(job_id)
            return job is not None and job.state is JobState.RUNNING and job.progress == 37

        await wait_for(at_37)
        go.set()
        await wait_state(queue, job_id, JobState.COMPLETED)
    assert refused == [True] * 4


async def test_run_once_returns_the_number_processed(queue: conveyor.Queue) -> None:
    @queue.job("one")
    async def one(payload: object, ctx: conveyor.Context) -> None:
        return None

    assert await queue.worker().run_once() == 0
    await queue.enqueue_many([conveyor.JobSpec("one") for _ in range(3)])
    await queue.enqueue("one", delay=3600)
    assert await queue.worker().run_once() == 3
    assert (await queue.counts())["scheduled"] == 1


# -- misbehaving handlers ---------------------------------------------------------------------
class Boom(BaseException):
    """Not an Exception subclass: still only fails the attempt."""


@pytest.mark.parametrize(
    "exc",
    [
        SystemExit(3),
        KeyboardInterrupt(),
        asyncio.CancelledError(),
        Boom("base"),
        GeneratorExit(),
        RuntimeError("x"),
    ],
    ids=[
        "SystemExit",
        "KeyboardInterrupt",
        "CancelledError",
        "BaseException",
        "GeneratorExit",
        "RuntimeError",
    ],
)
async def test_async_handler_raising_anything_fails_only_that_attempt(
    queue: conveyor.Queue, exc: BaseException
) -> None:
    @queue.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        await asyncio.sleep(0)
        raise exc

    @queue.job("good")
    async def good(payload: object, ctx: conveyor.Context) -> str:
        return "fine"

    async with running(queue.worker(concurrency=2)) as task:
        bad_id = await bad.enqueue(priority=-1)
        job = await wait_state(queue, bad_id, JobState.FAILED, JobState.COMPLETED)
        assert job.state is JobState.FAILED
        assert job.attempts == 1
        assert job.last_error is not None and job.last_error["type"] == type(exc).__name__
        # The worker is still alive and keeps running other jobs.
        good_ids = [await good.enqueue() for _ in range(3)]
        for g in good_ids:
            assert (await wait_state(queue, g, JobState.COMPLETED)).result == "fine"
        assert not task.done()


@pytest.mark.parametrize(
    "exc",
    [SystemExit(3), KeyboardInterrupt(), Boom("base")],
    ids=["SystemExit", "KeyboardInterrupt", "BaseException"],
)
async def test_sync_handler_raising_anything_fails_only_that_attempt(
    queue: conveyor.Queue, exc: BaseException
) -> None:
    @queue.job("bad-sync")
    def bad(payload: object, ctx: conveyor.Context) -> None:
        raise exc

    @queue.job("good-sync")
    def good(payload: object, ctx: conveyor.Context) -> str:
        return "fine"

    async with running(queue.worker(concurrency=2)) as task:
        bad_id = await bad.enqueue()
        job = await wait_state(queue, bad_id, JobState.FAILED, JobState.COMPLETED)
        assert job.state is JobState.FAILED
        assert job.last_error is not None and job.last_error["type"] == type(exc).__name__
        good_id = await good.enqueue()
        assert (await wait_state(queue, good_id, JobState.COMPLETED)).result == "fine"
        assert not task.done()


async def test_unknown_job_name_fails_orphaned_and_others_still_run(queue: conveyor.Queue) -> None:
    events = Events(queue)
    # enqueued while no job is registered here (as an enqueue-only process would)
    ghost = await queue.enqueue("ghost-job", {"a": 1}, priority=-5, attempts=3)

    @queue.job("known")
    async def known(payload: object, ctx: conveyor.Context) -> int:
        return 7

    ok = [await known.enqueue() for _ in range(3)]
    assert await queue.worker(concurrency=1).run_once() == 4
    job = await queue.get_job(ghost)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.last_error is not None and "ghost-job" in job.last_error["message"]
    assert "orphaned" in [e.type for e in await queue.get_job_events(ghost)]
    assert "orphaned" in events.types(ghost)
    for job_id in ok:
        j = await queue.get_job(job_id)
        assert j is not None and j.state is JobState.COMPLETED and j.result == 7


async def test_undecodable_payload_fails_cleanly_and_others_still_run(
    store, queue: conveyor.Queue
) -> None:
    ran: list[object] = []

    @queue.job("decode")
    async def decode(payload: object, ctx: conveyor.Context) -> None:
        ran.append(payload)

    bad = await decode.enqueue({"ok": False}, priority=-5, attempts=3)
    good = await decode.enqueue({"ok": True})
    await _raw.set_payload(store, queue, bad, "{not json")
    assert await queue.worker(concurrency=1).run_once() == 2
    job = await queue.get_job(bad)
    assert job is not None
    assert job.state is JobState.FAILED  # not retried: it would never decode
    assert job.attempts == 1
    assert job.last_error is not None and "decode" in job.last_error["message"]
    assert ran == [{"ok": True}]
    assert (await queue.get_job(good)).state is JobState.COMPLETED  # type: ignore[union-attr]


# -- channels and names ----------------------------------------------------------------------
async def test_channels_include_and_exclude(queue: conveyor.Queue) -> None:
    ran: list[str] = []
    for name, channel in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta"), ("d1", "default")):

        @queue.job(name, channel=channel)
        async def handler(payload: object, ctx: conveyor.Context) -> None:
            ran.append(ctx.name)

        await handler.enqueue()

    assert await queue.worker(channels=["alpha"], exclude=["a2"]).run_once() == 1
    assert ran == ["a1"]
    assert await queue.worker(include=["b1", "a2"]).run_once() == 2
    assert sorted(ran) == ["a1", "a2", "b1"]
    assert await queue.worker(channels=["alpha", "beta"]).run_once() == 0
    assert await queue.worker().run_once() == 1
    assert sorted(ran) == ["a1", "a2", "b1", "d1"]


async def test_enqueue_channel_overrides_the_definition(queue: conveyor.Queue) -> None:
    ran: list[str] = []

    @queue.job("routed", channel="alpha")
    async def routed(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.channel)

    await routed.enqueue(channel="beta")
    assert await queue.worker(channels=["alpha"]).run_once() == 0
    assert await queue.worker(channels=["beta"]).run_once() == 1
    assert ran == ["beta"]


# -- graceful stop ----------------------------------------------------------------------------
async def test_stop_lets_short_jobs_finish_and_requeues_long_ones_without_an_attempt(
    queue: conveyor.Queue,
) -> None:
    started: set[str] = set()
    long_cancelled = asyncio.Event()
    block = [True]
    attempts_seen: list[int] = []

    @queue.job("short")
    async def short(payload: object, ctx: conveyor.Context) -> str:
        started.add("short")
        await asyncio.sleep(0.3)
        return "done"

    @queue.job("long", attempts=3)
    async def long(payload: object, ctx: conveyor.Context) -> str:
        started.add("long")
        attempts_seen.append(ctx.attempt)
        if not block[0]:
            return "second run"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if ctx.cancelled:
                long_cancelled.set()
            raise
        return "never"

    s = await short.enqueue()
    lo = await long.enqueue()
    worker = queue.worker(concurrency=2)
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: started == {"short", "long"})
    t0 = time.monotonic()
    await asyncio.wait_for(worker.stop(drain_timeout=0.8), 10)
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 5
    assert long_cancelled.is_set()
    js = await queue.get_job(s)
    assert js is not None and js.state is JobState.COMPLETED and js.result == "done"
    jl = await queue.get_job(lo)
    assert jl is not None
    assert jl.state is JobState.QUEUED
    assert jl.attempts == 0  # the drained attempt was given back
    assert jl.errors == ()
    # Another worker picks it up later; the drained attempt did not count.
    block[0] = False
    assert await queue.worker().run_once() == 1
    assert attempts_seen == [1, 1]
    jl = await queue.get_job(lo)
    assert jl is not None and jl.state is JobState.COMPLETED and jl.attempts == 1


async def test_stop_gives_back_only_the_drained_attempt(queue: conveyor.Queue) -> None:
    """A job on its second attempt that is drained goes back to one attempt used, its
    first error kept, and its group is free again."""
    entered = asyncio.Event()
    ran: list[str] = []

    @queue.job("second-try", attempts=3, backoff=Backoff.fixed(0))
    async def second_try(payload: object, ctx: conveyor.Context) -> None:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        entered.set()
        await asyncio.sleep(30)

    @queue.job("same-group")
    async def same_group(payload: object, ctx: conveyor.Context) -> None:
        ran.append("same-group")

    job_id = await second_try.enqueue(group="g")
    worker = queue.worker()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.wait_for(worker.stop(drain_timeout=0.1), 10)
    await asyncio.wait_for(task, 10)
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 1
    assert [e["message"] for e in job.errors] == ["first attempt fails"]
    await queue.cancel(job_id)
    await same_group.enqueue(group="g")
    assert await queue.worker().run_once() == 1
    assert ran == ["same-group"]


async def test_stop_with_a_sync_handler_requeues_it(queue: conveyor.Queue) -> None:
    inside = threading.Event()
    saw_cancel = threading.Event()

    @queue.job("sync-long")
    def sync_long(payload: object, ctx: conveyor.Context) -> None:
        inside.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                saw_cancel.set()
                return
            time.sleep(0.01)

    job_id = await sync_long.enqueue()
    worker = queue.worker()
    task = asyncio.create_task(worker.run())
    await wait_for(inside.is_set)
    await asyncio.wait_for(worker.stop(drain_timeout=0.2), 10)
    await asyncio.wait_for(task, 10)
    await wait_for(saw_cancel.is_set, 5)
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0


async def test_stop_picks_up_nothing_new(queue: conveyor.Queue) -> None:
    ran: list[int] = []

    @queue.job("n")
    async def n(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.job_id)

    worker = queue.worker()
    async with running(worker) as task:
        pass  # started, then stopped
    assert task.done()  # run() returned: nothing is left that could fetch
    await n.enqueue()
    assert ran == []
    assert (await queue.counts())["queued"] == 1


async def test_stop_called_right_after_run_is_scheduled(queue: conveyor.Queue) -> None:
    """``stop()`` racing the worker's start-up must still stop it."""
    worker = queue.worker()
    task = asyncio.create_task(worker.run())
    await worker.stop(drain_timeout=1)  # before the task got to run at all
    try:
        await asyncio.wait_for(asyncio.shield(task), 3)
    finally:
        if not task.done():
            worker.abort()
            await asyncio.wait_for(task, 10)


async def test_a_worker_processes_jobs_enqueued_while_it_runs(queue: conveyor.Queue) -> None:
    @queue.job("later")
    async def later(payload: int, ctx: conveyor.Context) -> int:
        return payload * 2

    async with running(queue.worker()):
        ids = [await later.enqueue(i) for i in range(5)]
        for i, job_id in enumerate(ids):
            assert (await wait_state(queue, job_id, JobState.COMPLETED)).result == i * 2


async def test_scheduled_job_runs_when_due_with_a_running_worker(queue: conveyor.Queue) -> None:
    @queue.job("due-soon")
    async def due(payload: object, ctx: conveyor.Context) -> None:
        return None

    async with running(queue.worker()):
        t0 = time.monotonic()
        job_id = await due.enqueue(delay=0.5)
        assert (await queue.get_job(job_id)).state is JobState.SCHEDULED  # type: ignore[union-attr]
        job = await wait_state(queue, job_id, JobState.COMPLETED, timeout=10)
        assert time.monotonic() - t0 >= 0.45
        assert job.started_at is not None and job.started_at >= job.run_at


async def test_an_idle_worker_wakes_at_once_on_new_work_from_another_process(store) -> None:
    """Wake-ups come from notifications, not the (here very long) fallback poll."""
    worker_q = store.queue(poll_interval=30.0, sweep_interval=0.2)
    producer = store.queue()
    done = asyncio.Event()

    @worker_q.job("wake")
    async def wake(payload: object, ctx: conveyor.Context) -> None:
        done.set()

    await worker_q.migrate()
    async with running(worker_q.worker()):
        await asyncio.sleep(0.3)  # let the worker go idle (its first claim found nothing)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await producer.enqueue("wake")
        await asyncio.wait_for(done.wait(), 10)
        assert loop.time() - t0 < 2.0


async def test_an_idle_worker_runs_a_delayed_job_on_time(store) -> None:
    q = store.queue(poll_interval=30.0, sweep_interval=0.2)
    done = asyncio.Event()

    @q.job("delayed")
    async def delayed(payload: object, ctx: conveyor.Context) -> None:
        done.set()

    await q.migrate()
    async with running(q.worker()):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await delayed.enqueue(delay=0.5)
        await asyncio.wait_for(done.wait(), 10)
        assert 0.45 <= loop.time() - t0 < 2.0


async def test_competing_workers_run_each_job_exactly_once(store) -> None:
    runs: dict[int, int] = {}
    queues = [store.queue(poll_interval=0.05, sweep_interval=0.2) for _ in range(3)]
    for q in queues:

        @q.job("once")
        async def once(payload: int, ctx: conveyor.Context) -> None:
            runs[payload] = runs.get(payload, 0) + 1
            await asyncio.sleep(0)

    await queues[0].migrate()
    n = 90
    w0, w1, w2 = (q.worker(concurrency=5) for q in queues)
    async with running(w0), running(w1), running(w2):
        await queues[0].enqueue_many([conveyor.JobSpec("once", i) for i in range(n)])
        await wait_for(lambda: len(runs) == n, 30)

        async def all_completed() -> bool:
            return (await queues[0].counts())["completed"] == n

        await wait_for(all_completed, 30)
    assert runs == dict.fromkeys(range(n), 1)


async def test_results_and_errors_round_trip_exactly(queue: conveyor.Queue) -> None:
    value = {
        "big": 2**62,
        "f": 0.1 + 0.2,
        "tiny": 1e-300,
        "text": "ünï ✓ 名前 🚀 ']] \\ /",
        "empty": {},
        "list": [],
    }
    message = "ünï ✓ 名前 '; DROP TABLE x; -- ]]..KEYS[1]..[[ \\ \" /"

    @queue.job("exact")
    async def exact(payload: object, ctx: conveyor.Context) -> object:
        return value

    @queue.job("exact-error")
    async def exact_error(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError(message)

    ok = await exact.enqueue()
    bad = await exact_error.enqueue()
    await queue.worker().run_once()
    job = await queue.get_job(ok)
    assert job is not None and job.result == value
    job = await queue.get_job(bad)
    assert job is not None and job.last_error is not None
    assert job.last_error["message"] == message
    assert message in job.last_error["traceback"]
