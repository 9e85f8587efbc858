"""The operations surface on Redis only: what delete_jobs leaves behind in the indexes,
throughput's bucket bounds against a brute-force count, the worker registry's clean-up
and event ids across stream entries (the shared contract is in ``test_ops.py``)."""

from __future__ import annotations

import random
from collections import Counter

import redis.asyncio as aioredis

from conveyor.backends.base import (
    Backend,
    EnqueueParams,
    EventRead,
    JobFilter,
    NewToken,
    StepSave,
    ThroughputParams,
)
from conveyor.backends.redis.keys import Keys
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    enqueue,
    error,
    finish,
    new_job,
    one_in_each_state,
    outcome,
)
from tests.backends.test_ops import worker


# -- delete_jobs ------------------------------------------------------------------------------
async def test_deleting_every_job_but_the_running_one_leaves_no_trace(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    ids = await one_in_each_state(backend)
    grouped = await enqueue(
        backend,
        new_job("g", group="grp", idempotency_key="k1", tenant="t"),
        new_job("g", group="grp", channel="other"),
        new_job("late", run_at=NOW + 60, group="grp2"),
    )
    [holder] = await enqueue(backend, new_job("holder"))
    assert await claim_ids(backend, token="th", include=("holder",)) == [holder]
    token = NewToken("tok-1", None)
    assert await backend.save_step(StepSave(holder, "th", "s", "1", NOW, token))
    wait = outcome(
        holder, "th", JobState.WAITING, run_at=NOW + 99, wait_token="tok-1", refund_attempt=True
    )
    assert await backend.complete_many([wait]) == [True]
    running = ids[JobState.RUNNING]
    doomed = [i for s, i in ids.items() if s != JobState.RUNNING] + grouped + [holder]
    removed = await backend.delete_jobs([*doomed, running, *doomed], NOW)  # twice: once
    assert sorted(r.id for r in removed) == sorted(doomed)

    keys = Keys(store.token)
    left = {k async for k in client.scan_iter(match=keys.base + "*", count=1000)}
    per_job = (":job:", ":ev:", ":log:", ":steps:", ":toks:", ":tok:", ":gq:")
    assert sorted(k for k in left if any(p in k for p in per_job)) == [
        keys.events(running),
        keys.job(running),
    ]
    for state in JobState:
        expect = [str(running)] if state == JobState.RUNNING else []
        assert await client.zrange(keys.state(state.value), 0, -1) == expect
    assert await client.zrange(keys.fixed("all"), 0, -1) == [str(running)]
    for name in ("due", "wait", "idem", "grep", "glock"):
        assert not await client.exists(keys.fixed(name)), name
    for channel in ("default", "other"):
        assert await client.zcard(keys.ready(channel)) == 0
        assert await client.zcard(keys.base + f"queued_at:{channel}") == 0
    for state in ("completed", "failed", "cancelled"):
        assert await client.zcard(keys.base + f"done:{state}") == 0
    counts = await backend.counts(None)
    assert counts == {s.value: int(s == JobState.RUNNING) for s in JobState}
    by_channel = {s.channel: dict(s.counts) for s in await backend.channel_stats()}
    assert {c: {k: v for k, v in n.items() if v} for c, n in by_channel.items()} == {
        "default": {"running": 1}
    }
    # the idempotency key is free again
    [again] = await backend.enqueue_many(
        EnqueueParams([new_job("g", idempotency_key="k1", tenant="t")], NOW)
    )
    assert again.created


async def test_deleting_a_groups_first_member_frees_the_next_one(backend: Backend) -> None:
    first, second = await enqueue(
        backend, new_job("a", group="g"), new_job("b", group="g", channel="other")
    )
    assert [r.id for r in await backend.delete_jobs([first], NOW)] == [first]
    assert await claim_ids(backend, channels=("default", "other")) == [second]


async def test_delete_reports_name_tenant_and_attempts(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job("x", tenant="acme"))
    assert await claim_ids(backend, token="t1") == [job_id]
    await finish(backend, job_id, "t1", state=JobState.FAILED, error=error())
    [removed] = await backend.delete_jobs([job_id], NOW)
    assert (removed.id, removed.name, removed.tenant, removed.attempts) == (
        job_id,
        "x",
        "acme",
        1,
    )


# -- throughput ----------------------------------------------------------------------------------
async def test_throughput_matches_a_brute_force_count(backend: Backend) -> None:
    rng = random.Random(7)
    since, width, buckets = NOW, 0.1, 500  # 0.1 is not a binary fraction
    bounds = [since + i * width for i in range(buckets + 1)]
    times = [rng.choice(bounds) for _ in range(60)]  # exactly on a boundary
    times += [rng.uniform(since - 5, bounds[-1] + 5) for _ in range(140)]
    times += [bounds[-1], bounds[0]]
    states = [rng.choice((JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)) for _ in times]
    await enqueue(backend, *(new_job("t") for _ in times))
    jobs = await claim(backend, token="k", limit=len(times))
    assert len(jobs) == len(times)
    results = await backend.complete_many(
        [
            outcome(j.id, "k", state, at=at, error=error() if state == JobState.FAILED else None)
            for j, at, state in zip(jobs, times, states, strict=True)
        ]
    )
    assert all(results)

    expected: Counter[tuple[int, str]] = Counter()
    for at, state in zip(times, states, strict=True):
        for i in range(buckets):
            if bounds[i] <= at < bounds[i + 1]:
                expected[i, state.value] += 1
    got = await backend.throughput(ThroughputParams(since, width, buckets))
    assert [b.index for b in got] == sorted({i for i, _ in expected})
    for b in got:
        assert (b.completed, b.failed, b.cancelled) == (
            expected[b.index, "completed"],
            expected[b.index, "failed"],
            expected[b.index, "cancelled"],
        )
    assert await backend.throughput(ThroughputParams(since, width, 0)) == []
    assert await backend.throughput(ThroughputParams(since, 0, 10)) == []


# -- the worker registry ----------------------------------------------------------------------
async def test_listing_drops_expired_registrations(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    await backend.register_worker(worker("old", expires=NOW + 10))
    await backend.register_worker(worker("new", expires=NOW + 20, host="hôte"))
    assert [w.id for w in await backend.list_workers(NOW + 10)] == ["new"]
    keys = Keys(store.token)
    assert await client.hkeys(keys.fixed("workers")) == ["new"]
    assert await client.zrange(keys.fixed("workers_exp"), 0, -1) == ["new"]
    [listed] = await backend.list_workers(NOW)
    assert listed.host == "hôte"
    await backend.remove_worker("new")
    assert not await client.exists(keys.fixed("workers"), keys.fixed("workers_exp"))


# -- name prefix --------------------------------------------------------------------------------
async def test_name_prefixes_are_not_lua_patterns(backend: Backend) -> None:
    names = ["a.b", "a%b", "a[b", "a-b", "a+b", "ab"]
    by = dict(zip(names, await enqueue(backend, *(new_job(n) for n in names)), strict=True))
    for name in names:
        listed = await backend.list_jobs(JobFilter(name_prefix=name[:2]))
        assert [j.id for j in listed] == [by[name]], name
    assert len(await backend.list_jobs(JobFilter(name_prefix="a"))) == len(names)
    assert len(await backend.list_jobs(JobFilter(name_prefix=""))) == len(names)
    assert await backend.cancel_jobs(JobFilter(name_prefix="a%"), NOW) == 1


# -- event ids ------------------------------------------------------------------------------------
async def test_event_ids_span_stream_entries(backend: Backend) -> None:
    start = (await backend.read_events(EventRead(None, 0, 0))).cursor
    ids = await enqueue(backend, *(new_job(f"e{i}") for i in range(120)))  # 3 entries
    everything = (await backend.read_events(EventRead(start, 1000, 1))).events
    assert [e.job_id for e in everything] == ids
    entry_ends = [e.id for e in everything if e.id is not None and "/" not in e.id]
    assert len(entry_ends) == 3 and entry_ends[-1] == everything[-1].id
    paged, cursor = [], start
    while len(paged) < len(ids):
        page = await backend.read_events(EventRead(cursor, 7, 1))
        paged += page.events
        cursor = page.cursor
        assert cursor == page.events[-1].id  # the page cursor is its last event's id
    assert [e.id for e in paged] == [e.id for e in everything]
    for k in (0, 48, 49, 50, 99, 100, 118, 119):
        rest = await backend.read_events(EventRead(everything[k].id, 1000, 0))
        assert [e.job_id for e in rest.events] == ids[k + 1 :], k
