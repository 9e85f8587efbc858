"""Timeouts: precedence, cancellation of async handlers, ctx.cancelled for sync ones,
extend_timeout, kill_on_timeout in a child process, retried like any failure."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import conveyor
from conveyor import Backoff, JobState
from conveyor.testing import drain
from tests.conformance import _handlers
from tests.conftest import wait_for


def _timed_out(job: conveyor.Job | None) -> bool:
    return (
        job is not None
        and job.state is JobState.FAILED
        and job.last_error is not None
        and job.last_error["type"] == "TimeoutError"
    )


async def _run_sleeper(
    queue: conveyor.Queue,
    *,
    sleep: float,
    definition: float | None,
    option: float | None,
    worker: float | None,
) -> conveyor.Job | None:
    @queue.job("sleeper", timeout=definition)
    async def sleeper(payload: object, ctx: conveyor.Context) -> str:
        await asyncio.sleep(sleep)
        return "woke"

    job_id = await (sleeper.enqueue(timeout=option) if option is not None else sleeper.enqueue())
    t0 = time.monotonic()
    await queue.worker(timeout=worker).run_once()
    assert time.monotonic() - t0 < sleep + 5
    return await queue.get_job(job_id)


async def test_worker_default_timeout(queue: conveyor.Queue) -> None:
    t0 = time.monotonic()
    job = await _run_sleeper(queue, sleep=30, definition=None, option=None, worker=0.2)
    assert _timed_out(job)
    assert time.monotonic() - t0 < 5


async def test_definition_timeout_beats_the_worker_default(queue: conveyor.Queue) -> None:
    assert _timed_out(await _run_sleeper(queue, sleep=30, definition=0.2, option=None, worker=60))


async def test_definition_timeout_longer_than_the_worker_default_wins(
    queue: conveyor.Queue,
) -> None:
    job = await _run_sleeper(queue, sleep=0.4, definition=10, option=None, worker=0.1)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "woke"


async def test_job_option_timeout_beats_the_definition(queue: conveyor.Queue) -> None:
    assert _timed_out(await _run_sleeper(queue, sleep=30, definition=60, option=0.2, worker=60))


async def test_job_option_timeout_longer_than_the_definition_wins(queue: conveyor.Queue) -> None:
    job = await _run_sleeper(queue, sleep=0.4, definition=0.1, option=10, worker=0.1)
    assert job is not None and job.state is JobState.COMPLETED


async def test_no_timeout_anywhere_means_none(queue: conveyor.Queue) -> None:
    job = await _run_sleeper(queue, sleep=0.3, definition=None, option=None, worker=None)
    assert job is not None and job.state is JobState.COMPLETED


async def test_timed_out_async_handler_is_cancelled_with_ctx_cancelled(
    queue: conveyor.Queue,
) -> None:
    seen: dict[str, object] = {}

    @queue.job("cancel-me", timeout=0.2)
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled"] = ctx.cancelled
            raise
        seen["finished"] = True

    job_id = await handler.enqueue()
    t0 = time.monotonic()
    await queue.worker().run_once()
    assert time.monotonic() - t0 < 5
    assert seen == {"cancelled": True}
    job = await queue.get_job(job_id)
    assert _timed_out(job)
    assert job is not None and job.attempts == 1
    assert [e.type for e in await queue.get_job_events(job_id)][-1] == "failed"


async def test_async_handler_swallowing_the_cancel_still_times_out(queue: conveyor.Queue) -> None:
    @queue.job("stubborn", timeout=0.2)
    async def handler(payload: object, ctx: conveyor.Context) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        return "pretend all is well"

    job_id = await handler.enqueue()
    await queue.worker().run_once()
    job = await queue.get_job(job_id)
    assert _timed_out(job), job


async def test_sync_handler_is_told_through_ctx_cancelled(queue: conveyor.Queue) -> None:
    noticed = threading.Event()

    @queue.job("sync-timeout", timeout=0.2)
    def handler(payload: object, ctx: conveyor.Context) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                noticed.set()
                return "noticed"
            time.sleep(0.01)
        return "never told"

    job_id = await handler.enqueue()
    t0 = time.monotonic()
    await queue.worker().run_once()
    await wait_for(noticed.is_set, 5)
    assert time.monotonic() - t0 < 5
    assert _timed_out(await queue.get_job(job_id))


async def test_extend_timeout_pushes_the_deadline(queue: conveyor.Queue) -> None:
    @queue.job("extends", timeout=0.3)
    async def handler(payload: object, ctx: conveyor.Context) -> str:
        for _ in range(5):
            await asyncio.sleep(0.15)
            ctx.extend_timeout(0.5)
        return "made it"

    job_id = await handler.enqueue()
    await queue.worker().run_once()
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "made it"


async def test_extend_timeout_without_an_argument_resets_to_the_jobs_timeout(
    queue: conveyor.Queue,
) -> None:
    """Each reset gives the whole timeout again: 6 x 0.15 s of work under a 0.3 s timeout
    completes; the same work without resets times out."""

    @queue.job("resets", timeout=0.3)
    async def resets(payload: object, ctx: conveyor.Context) -> str:
        for _ in range(6):
            await asyncio.sleep(0.15)
            if payload:
                ctx.extend_timeout()
        return "made it"

    kept, lost = await resets.enqueue(True), await resets.enqueue(False)
    await queue.worker().run_once()
    job = await queue.get_job(kept)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "made it"
    assert _timed_out(await queue.get_job(lost))


async def test_on_timeout_may_extend_the_deadline_or_let_it_pass(queue: conveyor.Queue) -> None:
    asked: list[int] = []

    @queue.job("asks", timeout=0.2)
    async def asks(payload: dict[str, int], ctx: conveyor.Context) -> str:
        grants = payload["grants"]

        def more_time() -> float | None:
            asked.append(payload["grants"])
            nonlocal grants
            if grants == 0:
                return None
            grants -= 1
            return 0.2

        ctx.on_timeout(more_time)
        await asyncio.sleep(0.5)  # needs 0.5 s: two extensions of 0.2 s cover it
        return "done"

    ok, short = await asks.enqueue({"grants": 2}), await asks.enqueue({"grants": 0})
    await queue.worker().run_once()
    job = await queue.get_job(ok)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "done"
    assert _timed_out(await queue.get_job(short))
    assert asked.count(2) >= 2 and asked.count(0) == 1

    async def no_progress(value: int) -> None: ...

    ctx = conveyor.Context(job_id=1, name="x", attempt=1, max_attempts=1, tenant=None,
                           channel="default", tags=(), priority=0, clock=time.time,
                           progress=no_progress)  # fmt: skip
    with pytest.raises(conveyor.ValidationError, match="callable"):
        ctx.on_timeout("not callable")  # type: ignore[arg-type]


async def test_extend_timeout_from_a_sync_handler(queue: conveyor.Queue) -> None:
    @queue.job("sync-extends", timeout=0.3)
    def handler(payload: object, ctx: conveyor.Context) -> str:
        for _ in range(5):
            time.sleep(0.15)
            ctx.extend_timeout(0.5)
            if ctx.cancelled:
                return "cancelled"
        return "made it"

    job_id = await handler.enqueue()
    await queue.worker().run_once()
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "made it"


async def test_extend_timeout_does_not_help_without_calling_it_again(queue: conveyor.Queue) -> None:
    @queue.job("extends-once", timeout=0.2)
    async def handler(payload: object, ctx: conveyor.Context) -> str:
        ctx.extend_timeout(0.4)
        await asyncio.sleep(30)
        return "never"

    job_id = await handler.enqueue()
    t0 = time.monotonic()
    await queue.worker().run_once()
    elapsed = time.monotonic() - t0
    assert _timed_out(await queue.get_job(job_id))
    assert 0.35 <= elapsed < 5


async def test_extend_timeout_refuses_bad_values(queue: conveyor.Queue) -> None:
    refused: list[object] = []

    @queue.job("extend-bad", timeout=5)
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        for bad in (0, -1, "5", True):
            try:
                ctx.extend_timeout(bad)  # type: ignore[arg-type]
            except conveyor.ValidationError:
                refused.append(bad)

    await handler.enqueue()
    await queue.worker().run_once()
    assert refused == [0, -1, "5", True]


async def test_timeout_is_a_failed_attempt_and_is_retried(queue: conveyor.Queue) -> None:
    @queue.job("slow-then-fast", timeout=0.2, attempts=2, backoff=Backoff.fixed(0))
    async def handler(payload: object, ctx: conveyor.Context) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return ctx.attempt

    job_id = await handler.enqueue()
    await drain(queue)
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED and job.result == 2
    assert job.attempts == 2
    assert [(e["attempt"], e["type"]) for e in job.errors] == [(1, "TimeoutError")]
    types = [e.type for e in await queue.get_job_events(job_id)]
    assert types == ["enqueued", "started", "retrying", "started", "completed"]


# -- kill_on_timeout ------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child still answers kill(0): reap it if it is ours
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


async def test_kill_on_timeout_kills_the_child_process(
    queue: conveyor.Queue, tmp_path: Path
) -> None:
    queue.job("hang", timeout=2.0, kill_on_timeout=True)(_handlers.write_pid_and_hang)
    pid_file = tmp_path / "child.pid"
    job_id = await queue.enqueue("hang", {"pid_file": str(pid_file)})
    t0 = time.monotonic()
    await queue.worker().run_once()
    assert time.monotonic() - t0 < 15
    assert _timed_out(await queue.get_job(job_id))
    assert pid_file.exists(), "the handler never started in its child process"
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    await wait_for(lambda: not _alive(pid), 5)


async def test_kill_on_timeout_as_a_job_option(queue: conveyor.Queue, tmp_path: Path) -> None:
    queue.job("hang-option", timeout=2.0)(_handlers.write_pid_and_hang)
    pid_file = tmp_path / "child.pid"
    job_id = await queue.enqueue("hang-option", {"pid_file": str(pid_file)}, kill_on_timeout=True)
    await queue.worker().run_once()
    assert _timed_out(await queue.get_job(job_id))
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    await wait_for(lambda: not _alive(pid), 5)


async def test_kill_on_timeout_child_result_logs_and_errors(queue: conveyor.Queue) -> None:
    queue.job("child-add", timeout=20, kill_on_timeout=True)(_handlers.add_in_child)
    queue.job("child-raise", timeout=20, kill_on_timeout=True)(_handlers.raise_in_child)
    ok = await queue.enqueue("child-add", {"a": 2, "b": 3})
    bad = await queue.enqueue("child-raise", {"word": "no"})
    await queue.worker(concurrency=2).run_once()
    job = await queue.get_job(ok)
    assert job is not None and job.state is JobState.COMPLETED
    assert job.result["sum"] == 5 and job.result["pid"] != os.getpid()
    assert [r.message for r in await queue.get_job_logs(ok)] == [f"child {job.result['pid']}"]
    assert [e.data for e in await queue.get_job_events(ok) if e.type == "progress"] == [
        {"progress": 50}
    ]
    job = await queue.get_job(bad)
    assert job is not None and job.state is JobState.FAILED
    assert job.last_error is not None
    assert "child says no" in job.last_error["message"]
    assert "ValueError" in (job.last_error["type"] + job.last_error["message"])


async def test_kill_on_timeout_with_a_local_handler_fails_clearly(queue: conveyor.Queue) -> None:
    def local(payload: object, ctx: conveyor.Context) -> None:
        return None

    try:
        queue.job("local-kill", timeout=5, kill_on_timeout=True)(local)
    except conveyor.ValidationError:
        return  # refused at registration: also clear
    job_id = await queue.enqueue("local-kill")
    await queue.worker().run_once()
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.last_error is not None and "importable" in job.last_error["message"]


@pytest.mark.parametrize("sync", [False, True])
async def test_timeout_ends_the_attempt_promptly_and_frees_the_slot(
    queue: conveyor.Queue, sync: bool
) -> None:
    """A timed-out attempt frees its slot: the next job runs on a concurrency-1 worker."""
    ran: list[str] = []
    if sync:

        @queue.job("hog", timeout=0.2)
        def hog(payload: object, ctx: conveyor.Context) -> None:
            while not ctx.cancelled:
                time.sleep(0.01)
    else:

        @queue.job("hog", timeout=0.2)
        async def hog(payload: object, ctx: conveyor.Context) -> None:
            await asyncio.sleep(30)

    @queue.job("next")
    async def nxt(payload: object, ctx: conveyor.Context) -> None:
        ran.append("next")

    await hog.enqueue(priority=-1)
    await nxt.enqueue()
    t0 = time.monotonic()
    await queue.worker(concurrency=1).run_once()
    assert ran == ["next"]
    assert time.monotonic() - t0 < 5
