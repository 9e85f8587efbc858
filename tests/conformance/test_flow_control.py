"""Flow control (DESIGN.md "Flow control: limits and fairness") in one process: limits on a
definition, a sliding-window rate on a ManualClock, stored channel limits that a running
worker obeys, fairness between tenants, and bad input refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import Concurrency, running
from tests.conftest import wait_for


async def test_a_name_limit_caps_running_jobs(queue: conveyor.Queue) -> None:
    seen = Concurrency()
    release = asyncio.Event()

    @queue.job("capped", concurrency=conveyor.Limit(2))
    async def capped(payload: Any, ctx: conveyor.Context) -> None:
        seen.enter()
        try:
            await release.wait()
        finally:
            seen.exit()

    @queue.job("uncapped")
    async def uncapped(payload: Any, ctx: conveyor.Context) -> str:
        return "free"

    ids = [await capped.enqueue(i, priority=-1) for i in range(6)]
    free = await uncapped.enqueue()
    async with running(queue.worker(concurrency=10)):
        await wait_for(lambda: seen.now == 2, 10)
        job = await wait_for(lambda: _finished(queue, free), 10)  # not held behind the cap
        assert job.result == "free"
        for job_id in ids:
            j = await queue.get_job(job_id)
            assert j is not None and j.state in (JobState.RUNNING, JobState.QUEUED)
        release.set()
        await wait_for(lambda: _all_completed(queue, ids), 20)
    assert seen.max == 2 and seen.calls == 6


async def _finished(queue: conveyor.Queue, job_id: int) -> conveyor.Job | None:
    job = await queue.get_job(job_id)
    return job if job is not None and job.state is JobState.COMPLETED else None


async def _all_completed(queue: conveyor.Queue, ids: list[int]) -> bool:
    for job_id in ids:
        if await _finished(queue, job_id) is None:
            return False
    return True


async def test_a_rate_spreads_starts_over_the_window(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("api", rate=conveyor.Rate(3, per="10s"))
    async def api(payload: Any, ctx: conveyor.Context) -> None:
        return None

    ids = [await api.enqueue(i) for i in range(7)]
    assert await cq.worker().run_once() == 3
    held = [await cq.get_job(i) for i in ids[3:]]
    assert all(j is not None and (j.state, j.attempts) == (JobState.QUEUED, 0) for j in held)
    clock.advance(9.9)
    assert await cq.worker().run_once() == 0  # the window is still full
    clock.advance(0.1)
    assert await cq.worker().run_once() == 3
    clock.advance(10)
    assert await cq.worker().run_once() == 1
    assert (await cq.counts())["completed"] == 7


async def test_channel_limits_are_stored_shown_and_cleared(cq: conveyor.Queue) -> None:
    limits = await cq.set_channel_limits(
        "mail", concurrency=5, rate=conveyor.Rate(50, per="1s"), fair_by="tenant"
    )
    assert limits == conveyor.ChannelLimits("mail", 5, conveyor.Rate(50, per=1.0), "tenant")
    assert await cq.channel_limits() == [limits]
    [info] = [c for c in await cq.channels() if c.name == "mail"]
    assert info.limits == limits
    await cq.set_channel_limits("mail")  # nothing given: cleared
    assert await cq.channel_limits() == []


async def test_a_running_worker_obeys_new_channel_limits(queue: conveyor.Queue) -> None:
    seen = Concurrency()
    release = asyncio.Event()

    @queue.job("bulk", channel="bulk")
    async def bulk(payload: Any, ctx: conveyor.Context) -> None:
        seen.enter()
        try:
            await release.wait()
        finally:
            seen.exit()

    async with running(queue.worker(concurrency=10)):
        await queue.set_channel_limits("bulk", concurrency=2)
        ids = [await bulk.enqueue(i) for i in range(6)]
        await wait_for(lambda: seen.now == 2, 10)
        await asyncio.sleep(3 * queue.settings.sweep_interval)  # a few passes: still two
        assert seen.now == 2
        await queue.set_channel_limits("bulk", concurrency=4)
        await wait_for(lambda: seen.now == 4, 10)
        release.set()
        await wait_for(lambda: _all_completed(queue, ids), 20)
    assert seen.max == 4


async def test_fairness_shares_a_channel_between_tenants(cq: conveyor.Queue) -> None:
    order: list[str] = []

    @cq.job("share", channel="shared")
    async def share(payload: Any, ctx: conveyor.Context) -> None:
        order.append(str(ctx.tenant))

    await cq.set_channel_limits("shared", fair_by="tenant")
    await cq.enqueue_many([conveyor.JobSpec("share", i, tenant="A") for i in range(200)])
    for i in range(3):
        await share.enqueue(i, tenant="B")
    await cq.worker(concurrency=5).run_once()
    assert len(order) == 203
    last_b = max(i for i, t in enumerate(order) if t == "B")
    assert last_b < 10, order[:12]  # B's jobs are not stuck behind A's backlog


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: conveyor.Limit(0), "Limit n"),
        (lambda: conveyor.Limit(2, key="user"), "key"),
        (lambda: conveyor.Rate(5, per=0), "Rate per"),
        (lambda: conveyor.Rate(5, per="-1s"), "Rate per"),
        (lambda: conveyor.Rate(0, per="1s"), "Rate n"),
        (lambda: conveyor.Rate(5, per="1s", key="ip"), "key"),
        (lambda: conveyor.ChannelLimits("c", fair_by="user"), "fair_by"),
        (lambda: conveyor.ChannelLimits("c", rate=conveyor.Rate(1, "1s", key="tenant")), "no key"),
        (lambda: conveyor.ChannelLimits("c", concurrency=0), "concurrency"),
    ],
)
def test_bad_limits_are_refused(build: Any, needle: str) -> None:
    with pytest.raises(conveyor.ValidationError, match=needle):
        build()


async def test_bad_limit_options_are_refused_at_definition(cq: conveyor.Queue) -> None:
    with pytest.raises(conveyor.ValidationError, match=r"conveyor\.Limit"):
        cq.job("x", concurrency=3)(lambda p, c: None)  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError, match=r"conveyor\.Rate"):
        cq.job("y", rate=(10, 1))(lambda p, c: None)  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError, match="channel"):
        await cq.set_channel_limits("bad channel\n", concurrency=1)
    assert await cq.channel_limits() == []
