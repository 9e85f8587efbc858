"""Cron schedules: upsert_cron, list_cron, delete_cron, set_cron_paused, fire_cron."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.backends.base import Backend, CronFire, CronFireResult, CronPause, CronRecord
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, get, new_job, ts


def cron(name: str = "digest", **kw: Any) -> CronRecord:
    fields: dict[str, Any] = {
        "name": name,
        "expression": "*/5 * * * *",
        "job": "digest-job",
        "payload": '{"k": 1}',
        "timezone": "UTC",
        "paused": False,
        "allow_overlap": False,
        "catch_up": None,
        "options": None,
        "next_run_at": NOW + 60,
    }
    fields.update(kw)
    return CronRecord(**fields)


def fire(
    expected: float, new_next: float | None, *, job: bool = True, name: str = "digest"
) -> CronFire:
    """Fire the tick ``expected`` of ``name`` (a job due at the tick unless ``job=False``)."""
    return CronFire(
        name=name,
        expected_next=expected,
        new_next=new_next,
        tick=expected,
        job=new_job("digest-job", run_at=expected, state=JobState.QUEUED) if job else None,
        now=expected + 0.25,
    )


async def schedules(backend: Backend) -> dict[str, CronRecord]:
    records = await backend.list_cron()
    assert all(isinstance(r, CronRecord) for r in records)
    return {r.name: r for r in records}


async def test_upsert_and_list(backend: Backend) -> None:
    assert await backend.list_cron() == []
    a = cron("a")
    b = cron(
        "b",
        expression="@every 300",
        job="other-job",
        payload='{"x": [1, 2]}',
        timezone="Europe/Amsterdam",
        paused=True,
        allow_overlap=True,
        catch_up=3600.0,
        options='{"priority": 2, "attempts": 4}',
        next_run_at=None,
    )
    await backend.upsert_cron(a)
    await backend.upsert_cron(b)
    assert await schedules(backend) == {"a": a, "b": b}


async def test_upsert_replaces_but_keeps_the_last_run(backend: Backend) -> None:
    await backend.upsert_cron(cron())
    won = await backend.fire_cron(fire(NOW + 60, NOW + 120))
    assert won.won and won.job_id is not None
    replacement = cron(expression="0 * * * *", payload='{"k": 2}', next_run_at=NOW + 3600)
    assert (replacement.last_run_at, replacement.last_job_id) == (None, None)
    await backend.upsert_cron(replacement)
    [stored] = await backend.list_cron()
    assert (stored.expression, stored.payload, stored.next_run_at) == (
        "0 * * * *",
        '{"k": 2}',
        NOW + 3600,
    )
    assert (stored.last_run_at, stored.last_job_id) == (NOW + 60, won.job_id)


async def test_delete_cron_counts_what_it_deleted(backend: Backend) -> None:
    for name in ("a", "b", "c"):
        await backend.upsert_cron(cron(name))
    assert await backend.delete_cron(["a", "c", "missing"]) == 2
    assert set(await schedules(backend)) == {"b"}
    assert await backend.delete_cron([]) == 0
    assert await backend.delete_cron(["a"]) == 0


async def test_set_cron_paused(backend: Backend) -> None:
    await backend.upsert_cron(cron(next_run_at=NOW + 60))
    assert await backend.set_cron_paused(CronPause("digest", True, None)) is True
    [stored] = await backend.list_cron()
    assert (stored.paused, stored.next_run_at) == (True, NOW + 60)  # None: kept
    assert await backend.set_cron_paused(CronPause("digest", False, NOW + 500)) is True
    [stored] = await backend.list_cron()
    assert (stored.paused, stored.next_run_at) == (False, NOW + 500)
    assert await backend.set_cron_paused(CronPause("nope", True, None)) is False
    assert set(await schedules(backend)) == {"digest"}  # nothing created


async def test_fire_cron_is_a_compare_and_swap(backend: Backend) -> None:
    await backend.upsert_cron(cron(next_run_at=NOW + 60))
    first = await backend.fire_cron(fire(NOW + 60, NOW + 120))
    assert isinstance(first, CronFireResult)
    assert first.won is True and isinstance(first.job_id, int)
    job = await get(backend, first.job_id)
    assert (job.name, job.state, ts(job.run_at), ts(job.created_at)) == (
        "digest-job",
        "queued",
        NOW + 60,
        NOW + 60.25,
    )
    [stored] = await backend.list_cron()
    assert (stored.next_run_at, stored.last_run_at, stored.last_job_id) == (
        NOW + 120,
        NOW + 60,
        first.job_id,
    )
    # the same tick again (another process, late): lost, nothing stored or changed
    assert await backend.fire_cron(fire(NOW + 60, NOW + 120)) == CronFireResult(False, None)
    assert (await backend.counts(None))["queued"] == 1
    assert await backend.list_cron() == [stored]
    assert await claim_ids(backend, now=NOW + 61) == [first.job_id]


async def test_fire_cron_without_a_job_skips_the_tick(backend: Backend) -> None:
    await backend.upsert_cron(cron(next_run_at=NOW + 60))
    first = await backend.fire_cron(fire(NOW + 60, NOW + 120))
    skipped = await backend.fire_cron(fire(NOW + 120, NOW + 180, job=False))
    assert skipped == CronFireResult(True, None)
    [stored] = await backend.list_cron()
    assert (stored.next_run_at, stored.last_run_at) == (NOW + 180, NOW + 120)
    assert stored.last_job_id == first.job_id  # the running job it skipped for
    assert sum((await backend.counts(None)).values()) == 1


async def test_fire_cron_to_no_next_tick(backend: Backend) -> None:
    await backend.upsert_cron(cron(next_run_at=NOW + 60))
    assert (await backend.fire_cron(fire(NOW + 60, None))).won
    [stored] = await backend.list_cron()
    assert stored.next_run_at is None


async def test_fire_cron_of_an_unknown_schedule_loses(backend: Backend) -> None:
    assert await backend.fire_cron(fire(NOW, NOW + 60, name="ghost")) == CronFireResult(False, None)
    assert sum((await backend.counts(None)).values()) == 0
    assert await backend.list_cron() == []


async def test_concurrent_fires_of_one_tick_store_one_job(backend: Backend, store: Store) -> None:
    await backend.upsert_cron(cron(next_run_at=NOW + 60))
    others = [await store.connected() for _ in range(3)]  # like other processes
    results = await asyncio.gather(
        *(b.fire_cron(fire(NOW + 60, NOW + 120)) for b in (backend, *others, backend))
    )
    winners = [r for r in results if r.won]
    assert len(winners) == 1 and winners[0].job_id is not None
    assert all(r == CronFireResult(False, None) for r in results if not r.won)
    assert (await backend.counts(None))["queued"] == 1
    [stored] = await backend.list_cron()
    assert stored.last_job_id == winners[0].job_id
