"""Cron: schedules stored and managed; exactly one enqueue per tick across processes, also
when the clock steps back; overlap, missed ticks, catch-up; DST; ctx.schedule/scheduled_for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import conveyor
from conveyor import CronSpec, JobState
from conveyor.testing import ManualClock
from tests.conformance._util import T0, Events

MINUTE = timedelta(minutes=1)
TICK1 = datetime(2030, 1, 7, 0, 1, tzinfo=UTC)  # the first "* * * * *" tick after T0


async def _jobs(q: conveyor.Queue, name: str) -> list[conveyor.Job]:
    return list(reversed(await q.list_jobs(name=name, limit=1000)))


async def _schedule(q: conveyor.Queue, name: str) -> conveyor.CronSchedule:
    (found,) = [s for s in await q.list_cron() if s.name == name]
    return found


async def test_add_and_list_cron(cq: conveyor.Queue) -> None:
    created = await cq.add_cron("digest", "*/5 * * * *", job="order-digest", payload={"k": 1})
    assert created == conveyor.CronSchedule(
        name="digest",
        expression="*/5 * * * *",
        job="order-digest",
        payload={"k": 1},
        timezone="UTC",
        paused=False,
        allow_overlap=False,
        next_run_at=datetime(2030, 1, 7, 0, 5, tzinfo=UTC),
        last_run_at=None,
    )
    other = await cq.add_cron(
        "hourly", "0 * * * *", timezone="Europe/Amsterdam", allow_overlap=True
    )
    assert other.job == "hourly" and other.payload == {} and other.allow_overlap is True
    assert other.next_run_at == datetime(2030, 1, 7, 1, 0, tzinfo=UTC)
    assert await cq.list_cron() == [created, other]


async def test_changing_an_expression_takes_effect_at_once(cq: conveyor.Queue) -> None:
    await cq.add_cron("s", "0 * * * *")
    assert (await _schedule(cq, "s")).next_run_at == datetime(2030, 1, 7, 1, 0, tzinfo=UTC)
    await cq.add_cron("s", "*/10 * * * *")
    assert (await _schedule(cq, "s")).next_run_at == datetime(2030, 1, 7, 0, 10, tzinfo=UTC)
    await cq.add_cron("s", "0 6 * * *", timezone="America/New_York")
    assert (await _schedule(cq, "s")).next_run_at == datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
    assert len(await cq.list_cron()) == 1


async def test_pause_resume_and_remove(cq: conveyor.Queue, clock: ManualClock) -> None:
    await cq.add_cron("s", "* * * * *")
    await cq.pause_cron("s")
    assert (await _schedule(cq, "s")).paused is True
    clock.set(TICK1 + timedelta(seconds=5))
    await cq.run_maintenance()
    assert await _jobs(cq, "s") == []
    clock.set(TICK1 + timedelta(minutes=3, seconds=5))
    await cq.resume_cron("s")
    resumed = await _schedule(cq, "s")
    assert resumed.paused is False
    assert resumed.next_run_at == TICK1 + timedelta(
        minutes=4
    )  # ticks missed while paused are not replayed
    await cq.run_maintenance()
    assert await _jobs(cq, "s") == []
    clock.set(TICK1 + timedelta(minutes=4, seconds=1))
    await cq.run_maintenance()
    assert len(await _jobs(cq, "s")) == 1
    assert await cq.remove_cron("s") is True
    assert await cq.remove_cron("s") is False
    assert await cq.list_cron() == []
    clock.advance(3600)
    await cq.run_maintenance()
    assert len(await _jobs(cq, "s")) == 1  # removed: fires no more, its job stays
    with pytest.raises(conveyor.ValidationError):
        await cq.pause_cron("nope")
    with pytest.raises(conveyor.ValidationError):
        await cq.resume_cron("nope")


async def test_sync_cron_is_declarative(cq: conveyor.Queue) -> None:
    @cq.job("declared", cron="0 3 * * *")
    async def declared(payload: object, ctx: conveyor.Context) -> None:
        return None

    for name in ("a", "b", "cj", "ok"):  # the jobs the schedules below enqueue
        cq.job(name)(declared.fn)

    await cq.migrate()  # definition schedules are synced at migrate()
    assert [s.name for s in await cq.list_cron()] == ["declared"]
    await cq.add_cron("a", "* * * * *")
    await cq.add_cron("b", "* * * * *")
    await cq.sync_cron(
        [CronSpec("b", "*/2 * * * *", payload={"v": 2}), CronSpec("c", "0 0 * * *", job="cj")]
    )
    listed = {s.name: s for s in await cq.list_cron()}
    assert set(listed) == {"b", "c", "declared"}
    assert listed["b"].expression == "*/2 * * * *" and listed["b"].payload == {"v": 2}
    assert listed["c"].job == "cj"
    await cq.sync_cron([])
    assert [s.name for s in await cq.list_cron()] == ["declared"]
    with pytest.raises(conveyor.ValidationError):
        await cq.sync_cron([CronSpec("ok", "* * * * *"), CronSpec("bad", "nope")])
    assert [s.name for s in await cq.list_cron()] == ["declared"]  # all validated first


async def test_definition_schedules_every(cq: conveyor.Queue, clock: ManualClock) -> None:
    seen: list[tuple[str | None, datetime | None]] = []

    @cq.job("every-5", every=timedelta(minutes=5))
    async def every(payload: object, ctx: conveyor.Context) -> None:
        seen.append((ctx.schedule, ctx.scheduled_for))

    await cq.migrate()
    (sched,) = await cq.list_cron()
    assert sched.name == "every-5" and sched.job == "every-5"
    assert sched.next_run_at == datetime(2030, 1, 7, 0, 5, tzinfo=UTC)
    clock.set(datetime(2030, 1, 7, 0, 5, 1, tzinfo=UTC))
    await cq.worker().run_once()  # the worker's maintenance fires the tick, then runs it
    assert seen == [("every-5", datetime(2030, 1, 7, 0, 5, tzinfo=UTC))]


async def test_one_enqueue_per_tick_across_processes(store, clock: ManualClock) -> None:
    queues = [store.queue(clock=clock) for _ in range(5)]
    await queues[0].migrate()
    for q in queues[1:]:
        await q.migrate()
    events = [Events(q) for q in queues]
    await queues[0].add_cron("tick", "* * * * *", payload={"p": 1}, allow_overlap=True)
    fired_ticks = []
    for n in range(3):
        tick = TICK1 + n * MINUTE
        clock.set(tick + timedelta(seconds=1))
        await asyncio.gather(*(q.run_maintenance() for q in queues))
        await asyncio.gather(*(q.run_maintenance() for q in queues))  # and again: still once
        jobs = await _jobs(queues[0], "tick")
        assert len(jobs) == n + 1
        fired_ticks.append(tick)
    assert all(j.payload == {"p": 1} for j in jobs)
    assert len({j.id for j in jobs}) == 3
    fired = [e for ev in events for e in ev.of("cron_fired")]
    assert sorted(e.job_id for e in fired) == sorted(j.id for j in jobs)
    sched = await _schedule(queues[0], "tick")
    assert sched.last_run_at == fired_ticks[-1]
    assert sched.next_run_at == fired_ticks[-1] + MINUTE


async def test_clock_stepping_back_does_not_fire_twice(store, clock: ManualClock) -> None:
    q1 = store.queue(clock=clock)
    behind = ManualClock(T0)  # another process whose clock lags
    q2 = store.queue(clock=behind)
    await q1.migrate()
    await q1.add_cron("tick", "* * * * *", allow_overlap=True)
    clock.set(TICK1 + timedelta(seconds=1))
    await q1.run_maintenance()
    assert len(await _jobs(q1, "tick")) == 1
    clock.set(TICK1 - timedelta(seconds=20))  # NTP steps the clock back
    await q1.run_maintenance()
    behind.set(TICK1 + timedelta(seconds=0.5))
    await q2.run_maintenance()
    clock.set(TICK1 + timedelta(seconds=2))
    await q1.run_maintenance()
    assert len(await _jobs(q1, "tick")) == 1
    clock.set(TICK1 + MINUTE + timedelta(seconds=1))
    await q1.run_maintenance()
    assert len(await _jobs(q1, "tick")) == 2


async def test_allow_overlap_false_skips_a_tick_while_the_last_run_is_unfinished(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("report")
    async def report(payload: object, ctx: conveyor.Context) -> None:
        return None

    await cq.add_cron("report", "* * * * *", allow_overlap=False)
    clock.set(TICK1 + timedelta(seconds=1))
    await cq.run_maintenance()
    assert len(await _jobs(cq, "report")) == 1
    clock.set(TICK1 + MINUTE + timedelta(seconds=1))
    await cq.run_maintenance()  # the first run is still queued: skip
    assert len(await _jobs(cq, "report")) == 1
    assert (await _schedule(cq, "report")).next_run_at == TICK1 + 2 * MINUTE
    assert await cq.worker().run_once() == 1  # the first run finishes
    clock.set(TICK1 + 2 * MINUTE + timedelta(seconds=1))
    await cq.run_maintenance()
    jobs = await _jobs(cq, "report")
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.QUEUED]


async def test_allow_overlap_true_fires_every_tick(cq: conveyor.Queue, clock: ManualClock) -> None:
    await cq.add_cron("report", "* * * * *", allow_overlap=True)
    for n in range(3):
        clock.set(TICK1 + n * MINUTE + timedelta(seconds=1))
        await cq.run_maintenance()
    assert len(await _jobs(cq, "report")) == 3


async def test_missed_ticks_are_not_replayed(cq: conveyor.Queue, clock: ManualClock) -> None:
    await cq.add_cron("tick", "* * * * *")
    clock.set(TICK1 + timedelta(minutes=10, seconds=30))  # nothing ran for ten minutes
    await cq.run_maintenance()
    assert len(await _jobs(cq, "tick")) <= 1
    sched = await _schedule(cq, "tick")
    assert sched.next_run_at == TICK1 + timedelta(minutes=11)
    clock.set(TICK1 + timedelta(minutes=11, seconds=1))
    before = len(await _jobs(cq, "tick"))
    await cq.run_maintenance()
    assert len(await _jobs(cq, "tick")) == before + 1


async def test_catch_up_replays_missed_ticks_marked_with_their_tick(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    seen: list[tuple[str | None, datetime | None]] = []

    @cq.job("catchy")
    async def catchy(payload: object, ctx: conveyor.Context) -> None:
        seen.append((ctx.schedule, ctx.scheduled_for))

    await cq.add_cron(
        "nightly", "* * * * *", job="catchy", catch_up=timedelta(hours=1), allow_overlap=True
    )
    clock.set(TICK1 + timedelta(minutes=9, seconds=30))  # ticks 00:01 … 00:10 were missed
    await cq.run_maintenance()
    assert len(await _jobs(cq, "catchy")) == 10
    await cq.worker().run_once()
    expected = [TICK1 + n * MINUTE for n in range(10)]
    assert sorted(seen, key=lambda s: s[1] or T0) == [("nightly", t) for t in expected]
    assert (await _schedule(cq, "nightly")).next_run_at == TICK1 + 10 * MINUTE


async def test_catch_up_window_replays_only_ticks_inside_it(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    seen: list[datetime | None] = []

    @cq.job("windowed")
    async def windowed(payload: object, ctx: conveyor.Context) -> None:
        seen.append(ctx.scheduled_for)

    await cq.add_cron("windowed", "* * * * *", catch_up=timedelta(minutes=5), allow_overlap=True)
    now = TICK1 + timedelta(minutes=9, seconds=30)  # 00:10:30; ticks 00:01 … 00:10 missed
    clock.set(now)
    await cq.run_maintenance()
    await cq.worker().run_once()
    # Ticks at most 5 minutes late (00:06 … 00:10) are replayed; older ones are not.
    assert sorted(t for t in seen if t is not None) == [TICK1 + n * MINUTE for n in range(5, 10)]


async def test_replayed_runs_are_marked_as_such(cq: conveyor.Queue, clock: ManualClock) -> None:
    seen: dict[datetime, bool] = {}

    @cq.job("marked")
    async def marked(payload: object, ctx: conveyor.Context) -> None:
        assert ctx.scheduled_for is not None
        seen[ctx.scheduled_for] = ctx.replayed

    await cq.add_cron("marked", "* * * * *", catch_up=timedelta(minutes=3), allow_overlap=True)
    clock.set(TICK1 + timedelta(minutes=3, seconds=30))  # 00:04:30: 00:01 … 00:04 are due
    await cq.run_maintenance()
    await cq.worker().run_once()
    # 00:04 is 30 s late (on time); 00:02 and 00:03 are replays from the 3-minute
    # catch-up window; 00:01 (3.5 minutes late) is outside it and is not run at all.
    assert seen == {
        TICK1 + MINUTE: True,
        TICK1 + 2 * MINUTE: True,
        TICK1 + 3 * MINUTE: False,
    }


async def test_a_regular_tick_tells_the_handler_its_schedule(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    seen: list[tuple[str | None, datetime | None]] = []

    @cq.job("plain")
    async def plain(payload: object, ctx: conveyor.Context) -> None:
        seen.append((ctx.schedule, ctx.scheduled_for))

    await cq.add_cron("every-minute", "* * * * *", job="plain", priority=-3, attempts=4)
    await plain.enqueue()  # not from the schedule
    clock.set(TICK1 + timedelta(seconds=2))
    await cq.run_maintenance()
    cron_job = (await _jobs(cq, "plain"))[-1]
    assert cron_job.priority == -3 and cron_job.max_attempts == 4
    await cq.worker(concurrency=1).run_once()
    assert seen == [("every-minute", TICK1), (None, None)]  # priority -3 ran first


async def test_spring_forward_tick_fires_once_after_the_gap(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 3, 8, 5, 0, tzinfo=UTC))  # 00:00 EST
    await cq.add_cron("dst", "30 2 * * *", timezone="America/New_York")
    first = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 02:30 does not exist: 03:00 EDT
    assert (await _schedule(cq, "dst")).next_run_at == first
    clock.set(first + timedelta(seconds=1))
    await cq.run_maintenance()
    assert len(await _jobs(cq, "dst")) == 1
    assert (await _schedule(cq, "dst")).next_run_at == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


async def test_fall_back_tick_fires_once(cq: conveyor.Queue, clock: ManualClock) -> None:
    clock.set(datetime(2026, 11, 1, 4, 0, tzinfo=UTC))  # 00:00 EDT
    await cq.add_cron("dst", "30 1 * * *", timezone="America/New_York")
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first of two 01:30s
    assert (await _schedule(cq, "dst")).next_run_at == first
    clock.set(first + timedelta(seconds=1))
    await cq.run_maintenance()
    clock.set(datetime(2026, 11, 1, 6, 30, 1, tzinfo=UTC))  # 01:30 EST: the repeat
    await cq.run_maintenance()
    assert len(await _jobs(cq, "dst")) == 1
    assert (await _schedule(cq, "dst")).next_run_at == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


async def test_running_workers_fire_cron_by_themselves(store, clock: ManualClock) -> None:
    from tests.conformance._util import running
    from tests.conftest import wait_for

    queues = [store.queue(clock=clock, sweep_interval=0.05, poll_interval=0.05) for _ in range(3)]
    ran: list[datetime | None] = []
    for q in queues:

        @q.job("auto")
        async def auto(payload: object, ctx: conveyor.Context) -> None:
            ran.append(ctx.scheduled_for)

    await queues[0].migrate()
    await queues[0].add_cron("auto", "* * * * *")
    async with (
        running(queues[0].worker()),
        running(queues[1].worker()),
        running(queues[2].worker()),
    ):
        clock.set(TICK1 + timedelta(seconds=1))
        await wait_for(lambda: len(ran) == 1, 10)
        clock.set(TICK1 + MINUTE + timedelta(seconds=1))
        await wait_for(lambda: len(ran) == 2, 10)
        # Several more sweeps at the same time: nothing more fires.
        marker = await queues[0].enqueue("auto")
        from tests.conformance._util import wait_state

        await wait_state(queues[0], marker, JobState.COMPLETED)
    assert ran == [TICK1, TICK1 + MINUTE, None]
