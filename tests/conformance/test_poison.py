"""Poison input: one job never stops the jobs behind it, on every backend.

A lone surrogate (``"\\udcff"``, what ``os.fsdecode`` makes of an undecodable byte) is
valid in a Python str but not in UTF-8 text, so no store accepts it. Handlers that log it,
return it or raise with it must fail or finish their own attempt only; the worker keeps
running, the good jobs batched with them and queued behind them complete, and every job
stays readable. Input carrying it is refused before anything is written.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from tests.conformance._util import running, wait_state

BAD = "bad \udcff name"
SHOWN = "bad \ufffd name"  # what is stored: the surrogate visibly replaced


def _register(queue: conveyor.Queue) -> None:
    @queue.job("poison-log")
    async def poison_log(payload: Any, ctx: conveyor.Context) -> str:
        ctx.log.info(BAD)
        return "logged"

    @queue.job("poison-result")
    async def poison_result(payload: Any, ctx: conveyor.Context) -> dict[str, str]:
        return {"file": BAD, BAD: "key"}

    @queue.job("poison-error")
    async def poison_error(payload: Any, ctx: conveyor.Context) -> None:
        raise ValueError(BAD)

    @queue.job("poison-sync-result")
    def poison_sync(payload: Any, ctx: conveyor.Context) -> list[str]:
        return [BAD]

    @queue.job("good")
    async def good(payload: Any, ctx: conveyor.Context) -> int:
        return int(payload["n"])


async def test_poison_outcomes_fail_or_finish_alone_and_the_jobs_behind_them_run(
    queue: conveyor.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    _register(queue)
    poison = {
        name: await queue.enqueue(name, priority=-1)
        for name in ("poison-log", "poison-result", "poison-error", "poison-sync-result")
    }
    good = await queue.enqueue_many([conveyor.JobSpec("good", {"n": n}) for n in range(30)])
    worker = queue.worker(concurrency=8)
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        async with running(worker) as task:
            for job_id in good:
                await wait_state(queue, job_id, JobState.COMPLETED, timeout=20)
            for job_id in poison.values():
                await wait_state(queue, job_id, JobState.COMPLETED, JobState.FAILED)
            assert not task.done(), "the worker stopped"
    for n, job_id in enumerate(good):
        job = await queue.get_job(job_id)
        assert job is not None and job.result == n

    logged = await queue.get_job(poison["poison-log"])
    assert logged is not None and logged.state is JobState.COMPLETED
    assert [r.message for r in await queue.get_job_logs(logged.id)] == [SHOWN]

    result = await queue.get_job(poison["poison-result"])
    assert result is not None and result.state is JobState.COMPLETED
    assert result.result == {"file": SHOWN, SHOWN: "key"}

    sync_result = await queue.get_job(poison["poison-sync-result"])
    assert sync_result is not None and sync_result.result == [SHOWN]

    error = await queue.get_job(poison["poison-error"])
    assert error is not None and error.state is JobState.FAILED
    assert error.last_error is not None
    assert error.last_error["type"] == "ValueError"
    assert error.last_error["message"] == SHOWN
    assert SHOWN in error.last_error["traceback"]

    # Every job stays readable, one by one and in lists.
    listed = await queue.list_jobs(limit=1000)
    assert {j.id for j in listed} >= set(good) | set(poison.values())
    assert sum((await queue.counts()).values()) == len(good) + len(poison)


async def test_an_outcome_the_store_refuses_fails_that_job_alone(
    queue: conveyor.Queue,
) -> None:
    """A NUL character is valid JSON and valid UTF-8, and SQLite and Redis store it; a
    PostgreSQL jsonb or text column cannot hold it, so that backend stores U+FFFD in its
    place. Were a store to refuse it, the batch would be written outcome by outcome: that
    job fails saying why (``OutcomeNotStored``) and everything else is written (see
    tests/integration/test_refused_outcomes.py). Either way nothing is retried forever
    and nothing waits behind it."""

    @queue.job("nul")
    async def nul(payload: Any, ctx: conveyor.Context) -> str:
        ctx.log.info("nul \x00 in a log line")
        return "nul \x00 in a result"

    @queue.job("good")
    async def good(payload: Any, ctx: conveyor.Context) -> int:
        ctx.log.info("fine")
        return int(payload["n"])

    bad = [await queue.enqueue("nul", priority=-1) for _ in range(3)]
    good_ids = await queue.enqueue_many([conveyor.JobSpec("good", {"n": n}) for n in range(20)])
    worker = queue.worker(concurrency=5)
    async with running(worker) as task:
        for job_id in good_ids:
            await wait_state(queue, job_id, JobState.COMPLETED, timeout=20)
        for job_id in bad:
            await wait_state(queue, job_id, JobState.COMPLETED, JobState.FAILED, timeout=20)
        assert not task.done(), "the worker stopped"
    for job_id in good_ids:
        assert [r.message for r in await queue.get_job_logs(job_id)] == ["fine"]
    for job_id in bad:
        job = await queue.get_job(job_id)
        assert job is not None
        if job.state is JobState.COMPLETED:  # kept exactly, or NUL visibly replaced
            assert job.result in ("nul \x00 in a result", "nul \ufffd in a result")
            assert [r.message for r in await queue.get_job_logs(job_id)] in (
                ["nul \x00 in a log line"],
                ["nul \ufffd in a log line"],
            )
        else:
            assert job.last_error is not None
            assert job.last_error["type"] == "OutcomeNotStored"
            assert "completed outcome" in job.last_error["message"]
            assert job.attempts == 1


@pytest.mark.parametrize("field", ["name", "channel", "group", "tenant", "tags", "key"])
async def test_a_lone_surrogate_in_a_name_is_refused_on_every_path(
    queue: conveyor.Queue, field: str
) -> None:
    @queue.job("good")
    async def good(payload: Any, ctx: conveyor.Context) -> None: ...

    options: dict[str, Any] = {
        "channel": {"channel": BAD},
        "group": {"group": BAD},
        "tenant": {"tenant": BAD},
        "tags": {"tags": ["ok", BAD]},
        "key": {"idempotency_key": BAD},
        "name": {},
    }[field]
    name = BAD if field == "name" else "good"
    with pytest.raises(conveyor.ValidationError, match="lone surrogate"):
        await queue.enqueue(name, **options)
    with pytest.raises(conveyor.ValidationError, match="lone surrogate"):
        await queue.enqueue_many(
            [conveyor.JobSpec("good"), conveyor.JobSpec(name, **options), conveyor.JobSpec("good")]
        )
    with pytest.raises(conveyor.ValidationError, match="lone surrogate"):
        await queue.enqueue_many([conveyor.JobSpec(name, **options)] * 3)
    assert sum((await queue.counts()).values()) == 0, "something was written"
    # and the store still works: a good job runs
    job_id = await queue.enqueue("good")
    async with running(queue.worker()):
        await wait_state(queue, job_id, JobState.COMPLETED)


async def test_a_lone_surrogate_in_a_payload_is_refused(queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.PayloadError, match="lone surrogate"):
        await queue.enqueue("x", {"path": BAD})
    with pytest.raises(conveyor.PayloadError, match="lone surrogate"):
        await queue.enqueue_many([conveyor.JobSpec("x"), conveyor.JobSpec("x", [BAD])])
    assert sum((await queue.counts()).values()) == 0


async def test_a_payload_nested_past_the_limit_is_refused_and_one_at_the_limit_is_served(
    queue: conveyor.Queue,
) -> None:
    def nested(levels: int) -> Any:
        value: Any = []
        for _ in range(levels - 1):
            value = [value]
        return value

    with pytest.raises(conveyor.PayloadError, match="nested more than 100 levels"):
        await queue.enqueue("x", nested(101))
    job_id = await queue.enqueue("x", nested(100))
    job = await queue.get_job(job_id)
    assert job is not None and job.payload == nested(100)


async def test_tags_are_limited(queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.ValidationError, match="at most 100 tags"):
        await queue.enqueue("x", tags=[f"t{i}" for i in range(101)])
    job_id = await queue.enqueue("x", tags=[f"t{i}" for i in range(100)])
    job = await queue.get_job(job_id)
    assert job is not None and len(job.tags) == 100
