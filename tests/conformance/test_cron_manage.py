"""Managing schedules after they exist, on every backend: edit_cron changes only what
is given, run_cron enqueues now, list_cron filters by paused; and a decorator's schedule
is stored by the automatic migrate on first use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import T0


def _jobs(queue: conveyor.Queue, *names: str) -> None:
    for name in names:

        @queue.job(name)
        async def handler(payload: Any, ctx: conveyor.Context) -> Any:
            return payload


async def test_edit_cron_changes_only_what_is_given(cq: conveyor.Queue) -> None:
    _jobs(cq, "digest", "other")
    before = await cq.add_cron(
        "d", "0 6 * * *", job="digest", payload={"v": 1}, timezone="Europe/Amsterdam", attempts=3
    )
    after = await cq.edit_cron("d", payload={"v": 2})
    assert (after.job, after.timezone, after.expression) == (
        "digest",
        "Europe/Amsterdam",
        "0 6 * * *",
    )
    assert after.payload == {"v": 2} and after.next_run_at == before.next_run_at
    moved = await cq.edit_cron("d", "30 7 * * *")
    assert moved.expression == "30 7 * * *" and moved.payload == {"v": 2}
    assert moved.next_run_at != before.next_run_at  # a new expression takes effect at once
    interval = await cq.edit_cron("d", every=timedelta(minutes=5), job="other")
    assert interval.expression == "@every 300" and interval.job == "other"
    await cq.pause_cron("d")
    assert (await cq.edit_cron("d", payload=None)).paused  # stays paused
    with pytest.raises(conveyor.ValidationError, match="no schedule named 'nope'"):
        await cq.edit_cron("nope", payload={})
    with pytest.raises(conveyor.ValidationError):
        await cq.edit_cron("d", "not a cron")
    assert (await cq.list_cron())[0].expression == "@every 300"  # nothing changed


async def test_run_cron_enqueues_now_without_moving_the_next_tick(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    _jobs(cq, "digest")
    schedule = await cq.add_cron("d", "0 6 * * *", job="digest", payload={"v": 1})
    await cq.pause_cron("d")
    first = await cq.run_cron("d")
    second = await cq.run_cron("d")  # each run is its own job
    assert first != second
    job = await cq.get_job(first)
    assert job is not None and job.name == "digest" and job.payload == {"v": 1}
    assert job.state is JobState.QUEUED
    (listed,) = await cq.list_cron()
    assert listed.paused and listed.last_run_at is None
    await cq.resume_cron("d")
    assert (await cq.list_cron())[0].next_run_at == schedule.next_run_at
    with pytest.raises(conveyor.ValidationError, match="no schedule named"):
        await cq.run_cron("nope")


async def test_list_cron_filters_paused_and_active(cq: conveyor.Queue) -> None:
    _jobs(cq, "a", "b")
    await cq.add_cron("a", "* * * * *")
    await cq.add_cron("b", "* * * * *")
    await cq.pause_cron("b")
    assert [s.name for s in await cq.list_cron(paused=True)] == ["b"]
    assert [s.name for s in await cq.list_cron(paused=False)] == ["a"]
    assert sorted(s.name for s in await cq.list_cron()) == ["a", "b"]


async def test_a_declared_schedule_is_stored_by_the_first_use(store: Any) -> None:
    """No explicit migrate(): the first enqueue migrates the store, and the schedules
    declared with @queue.job(cron=…) are stored with it."""
    queue = store.queue()

    @queue.job("nightly", cron="0 2 * * *")
    async def nightly(payload: Any, ctx: conveyor.Context) -> None: ...

    await nightly.enqueue()
    assert [s.name for s in await queue.list_cron()] == ["nightly"]


async def test_pause_and_resume_emit_channel_events(queue: conveyor.Queue) -> None:
    seen: list[conveyor.Event] = []
    queue.on("*", seen.append)
    await queue.pause("emails")
    await queue.resume("emails")
    await queue.pause()
    assert [(e.type, e.data.get("channel"), e.job_id) for e in seen] == [
        ("channel_paused", "emails", 0),
        ("channel_resumed", "emails", 0),
        ("channel_paused", None, 0),
    ]


async def test_a_process_without_the_job_still_fires_its_schedule(store: Any) -> None:
    """The job name was checked when the schedule was stored; any process's maintenance
    fires the tick, also one whose strict queue has other jobs only."""
    clock = ManualClock(T0)
    owner, other = store.queue(clock=clock), store.queue(clock=clock)
    _jobs(owner, "digest")
    _jobs(other, "unrelated")
    await owner.add_cron("d", "* * * * *", job="digest")
    clock.advance(60)
    await other.run_maintenance()
    (job,) = await other.list_jobs(name="digest")
    assert job.state is JobState.QUEUED
