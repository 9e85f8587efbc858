"""pause() / resume(): per channel or everything, for every worker."""

from __future__ import annotations

import asyncio

import conveyor
from conveyor import JobState
from tests.conformance._util import running, wait_state


async def _recorder(queue: conveyor.Queue) -> list[str]:
    ran: list[str] = []

    @queue.job("p")
    async def p(payload: str, ctx: conveyor.Context) -> None:
        ran.append(payload)

    return ran


async def test_pause_one_channel(queue: conveyor.Queue) -> None:
    ran = await _recorder(queue)
    await queue.enqueue("p", "emails", channel="emails")
    await queue.enqueue("p", "reports", channel="reports")
    await queue.pause("emails")
    assert await queue.worker().run_once() == 1
    assert ran == ["reports"]
    await queue.resume("emails")
    assert await queue.worker().run_once() == 1
    assert ran == ["reports", "emails"]


async def test_pause_everything(queue: conveyor.Queue) -> None:
    ran = await _recorder(queue)
    await queue.enqueue("p", "a", channel="a")
    await queue.enqueue("p", "b")
    await queue.pause()
    assert await queue.worker().run_once() == 0
    await queue.enqueue("p", "c", channel="c")
    assert await queue.worker().run_once() == 0
    assert ran == []
    await queue.resume()
    assert await queue.worker().run_once() == 3
    assert sorted(ran) == ["a", "b", "c"]


async def test_resume_all_also_resumes_single_channels(queue: conveyor.Queue) -> None:
    ran = await _recorder(queue)
    await queue.enqueue("p", "a", channel="a")
    await queue.pause("a")
    await queue.resume()
    assert await queue.worker().run_once() == 1
    assert ran == ["a"]


async def test_pause_is_idempotent(queue: conveyor.Queue) -> None:
    ran = await _recorder(queue)
    await queue.enqueue("p", "a", channel="a")
    await queue.pause("a")
    await queue.pause("a")
    await queue.resume("a")
    assert await queue.worker().run_once() == 1
    assert ran == ["a"]
    await queue.resume("never-paused")


async def test_pause_from_another_process_stops_a_running_worker(
    store, queue: conveyor.Queue
) -> None:
    ran = await _recorder(queue)
    admin = store.queue()
    async with running(queue.worker()):
        first = await queue.enqueue("p", "before", channel="work")
        await wait_state(queue, first, JobState.COMPLETED)
        await admin.pause("work")
        held = await queue.enqueue("p", "while-paused", channel="work")
        other = await queue.enqueue("p", "other-channel", channel="free")
        # The claim that took the later job would have taken the earlier one too.
        await wait_state(queue, other, JobState.COMPLETED)
        assert (await queue.get_job(held)).state is JobState.QUEUED  # type: ignore[union-attr]
        await admin.resume("work")
        await wait_state(queue, held, JobState.COMPLETED)
    assert ran == ["before", "other-channel", "while-paused"]


async def test_pause_does_not_stop_running_jobs(queue: conveyor.Queue) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @queue.job("long")
    async def long(payload: object, ctx: conveyor.Context) -> str:
        entered.set()
        await release.wait()
        return "finished"

    job_id = await long.enqueue()
    async with running(queue.worker()):
        await asyncio.wait_for(entered.wait(), 10)
        await queue.pause()
        release.set()
        job = await wait_state(
            queue, job_id, JobState.COMPLETED, JobState.CANCELLED, JobState.QUEUED
        )
    assert job.state is JobState.COMPLETED and job.result == "finished"


async def test_a_channel_named_star_is_just_a_channel(queue: conveyor.Queue) -> None:
    """``*`` is accepted as a channel name, so pausing it must not pause every channel
    (or it must be refused as a name)."""
    ran = await _recorder(queue)
    try:
        await queue.enqueue("p", "star", channel="*")
    except conveyor.ValidationError:
        star_allowed = False
    else:
        star_allowed = True
    await queue.enqueue("p", "plain", channel="plain")
    if star_allowed:
        await queue.pause("*")
    assert await queue.worker().run_once() == 1
    assert ran == ["plain"]
    if star_allowed:
        await queue.resume("*")
        assert await queue.worker().run_once() == 1
        assert ran == ["plain", "star"]
