"""Strict names and required tenants, on every backend: input that could never run (a
typo'd job name) or that breaks the tenancy rule is refused before anything is written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import T0, total


def _register(queue: conveyor.Queue, name: str = "send-welcome") -> None:
    @queue.job(name)
    async def handler(payload: Any, ctx: conveyor.Context) -> str:
        return "sent"


async def test_a_typo_is_refused_once_the_queue_has_jobs_of_its_own(queue: conveyor.Queue) -> None:
    _register(queue)
    with pytest.raises(conveyor.ValidationError, match="no job named 'send-welcom'") as err:
        await queue.enqueue("send-welcom", {"to": "a"})
    assert "'send-welcome'" in str(err.value)  # it names what is registered
    with pytest.raises(conveyor.ValidationError, match="send-welcom"):
        await queue.enqueue_many(
            [conveyor.JobSpec("send-welcome"), conveyor.JobSpec("send-welcom")]
        )
    with pytest.raises(conveyor.ValidationError, match="send-welcom"):
        await asyncio.to_thread(queue.enqueue_sync, "send-welcom")
    with pytest.raises(conveyor.ValidationError, match="no-such-job"):
        await queue.add_cron("nightly", "0 2 * * *", job="no-such-job")
    assert await queue.list_cron() == []
    assert await total(queue) == 0, "something was written"
    assert await queue.enqueue("send-welcome") > 0
    assert await queue.enqueue("conveyor.cleanup") > 0  # the built-in jobs are registered


async def test_an_enqueue_only_queue_accepts_any_name(queue: conveyor.Queue) -> None:
    """No jobs of its own (the built-in ones do not count): another process runs them."""
    job_id = await queue.enqueue("handled-elsewhere", {"n": 1})
    job = await queue.get_job(job_id)
    assert job is not None and job.name == "handled-elsewhere"


async def test_strict_names_can_be_turned_off(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = store.queue(strict_names=False)
    _register(loose)
    assert await loose.enqueue("other-service-job") > 0
    monkeypatch.setenv("CONVEYOR_STRICT_NAMES", "false")
    from_env = store.queue()
    _register(from_env)
    assert await from_env.enqueue("other-service-job-2") > 0
    assert from_env.settings.strict_names is False


async def test_require_tenant_refuses_an_enqueue_without_one(store: Any) -> None:
    clock = ManualClock(T0)
    queue = store.queue(require_tenant=True, clock=clock)
    _register(queue)
    with pytest.raises(conveyor.ValidationError, match="requires a tenant"):
        await queue.enqueue("send-welcome")
    with pytest.raises(conveyor.ValidationError, match="requires a tenant"):
        await queue.enqueue_many(
            [conveyor.JobSpec("send-welcome", tenant="t1"), conveyor.JobSpec("send-welcome")]
        )
    assert await total(queue) == 0
    job_id = await queue.enqueue("send-welcome", tenant="system")
    job = await queue.get_job(job_id)
    assert job is not None and job.tenant == "system"
    # a schedule's jobs are the system's own: a cron tick still enqueues
    await queue.add_cron("tick", "* * * * *", job="send-welcome")
    clock.advance(60)
    await queue.run_maintenance()
    fired = [j for j in await queue.list_jobs(name="send-welcome") if j.id != job_id]
    assert len(fired) == 1 and fired[0].state is JobState.QUEUED


async def test_failed_jobs_kept_forever_are_never_pruned(store: Any) -> None:
    clock = ManualClock(T0)
    queue = store.queue(keep_failed=None, keep_completed="1s", clock=clock)

    @queue.job("boom")
    async def boom(payload: Any, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("no")

    @queue.job("fine")
    async def fine(payload: Any, ctx: conveyor.Context) -> None:
        return None

    failed, done = await queue.enqueue("boom"), await queue.enqueue("fine")
    assert await queue.worker().run_once() == 2
    clock.advance(400 * 86400)
    await queue.run_maintenance()
    job = await queue.get_job(failed)
    assert job is not None and job.state is JobState.FAILED
    assert await queue.get_job(done) is None  # completed: pruned after 1 s
    assert await queue.clean(0, "failed") == 1  # clean() still removes them
