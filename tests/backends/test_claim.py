"""claim: what is due, in which order, through which filters, and what a claim stores."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend, ClaimedJob
from conveyor.models import JobState
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    claim_params,
    enqueue,
    finish,
    get,
    new_job,
    outcome,
    ts,
)


async def test_order_is_priority_then_run_at_then_id(backend: Backend) -> None:
    late_low, b, c, d, e = await enqueue(
        backend,
        new_job("a", priority=1, run_at=NOW - 30, state=JobState.QUEUED),
        new_job("b", priority=0, run_at=NOW - 5, state=JobState.QUEUED),
        new_job("c", priority=0, run_at=NOW - 5, state=JobState.QUEUED),
        new_job("d", priority=0, run_at=NOW - 20, state=JobState.QUEUED),
        new_job("e", priority=-1, run_at=NOW, state=JobState.QUEUED),
    )
    assert await claim_ids(backend, limit=2) == [e, d]
    assert await claim_ids(backend, limit=10) == [b, c, late_low]
    assert await claim_ids(backend) == []


async def test_only_due_queued_jobs_are_claimed(backend: Backend) -> None:
    due, not_yet, scheduled = await enqueue(
        backend,
        new_job("due"),
        new_job("not-yet", state=JobState.QUEUED, run_at=NOW + 10),
        new_job("scheduled", state=JobState.SCHEDULED, run_at=NOW - 1),
    )
    assert await claim_ids(backend) == [due]
    assert await claim_ids(backend, now=NOW + 9.5) == []
    assert await claim_ids(backend, now=NOW + 10) == [not_yet]  # run_at <= now
    assert (await get(backend, scheduled)).state == JobState.SCHEDULED  # only promote_due


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_limit(backend: Backend, limit: int) -> None:
    ids = await enqueue(backend, *(new_job(str(i)) for i in range(3)))
    assert await claim_ids(backend, limit=limit) == ids[:limit]
    assert await claim_ids(backend, limit=10) == ids[limit:]


async def test_what_a_claim_returns_and_stores(backend: Backend) -> None:
    [job_id] = await enqueue(
        backend,
        new_job(
            "work",
            payload='{"x": [1, 2]}',
            priority=3,
            channel="ch",
            max_attempts=4,
            max_stalls=7,
            options='{"timeout": 3}',
            remove_on_complete=True,
            tags=("a", "b"),
            group="g",
            tenant="acme",
            run_at=NOW - 7,
            state=JobState.QUEUED,
        ),
        now=NOW - 8,
    )
    [job] = await claim(backend, token="tok-1", now=NOW, lease=45)
    assert isinstance(job, ClaimedJob)
    assert (job.id, job.name, job.payload, job.attempts, job.max_attempts) == (
        job_id,
        "work",
        '{"x": [1, 2]}',
        1,
        4,
    )
    assert (job.channel, job.priority, job.tenant, job.group, job.tags) == (
        "ch",
        3,
        "acme",
        "g",
        ("a", "b"),
    )
    assert (job.options, job.run_at, job.created_at, job.token, job.remove_on_complete) == (
        '{"timeout": 3}',
        NOW - 7,
        NOW - 8,
        "tok-1",
        True,
    )
    assert (job.stalls, job.max_stalls) == (0, 7)
    stored = await get(backend, job_id)
    assert (stored.state, stored.attempts, ts(stored.started_at)) == ("running", 1, NOW)
    assert stored.stalls == 0
    # the lease ends exactly at lease_expires_at
    assert await backend.expired_leases(NOW + 45 - 0.5, 10) == []
    [expired] = await backend.expired_leases(NOW + 45, 10)
    assert (expired.id, expired.token, expired.attempts) == (job_id, "tok-1", 1)
    # a started event, for attempt 1, at the claim's now
    started = [e for e in await backend.get_events(job_id) if e.type == "started"]
    assert [(e.job_id, e.job_name, e.tenant, e.attempt) for e in started] == [
        (job_id, "work", "acme", 1)
    ]
    assert ts(started[0].at) == NOW


async def test_a_claimed_job_is_not_claimed_again(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    assert await claim_ids(backend, token="t1") == [job_id]
    assert await claim_ids(backend, token="t2", now=NOW + 5) == []


async def test_attempts_count_every_claim(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    [first] = await claim(backend, token="t1")
    assert first.attempts == 1
    await finish(backend, job_id, "t1", state=JobState.QUEUED, run_at=NOW + 1, event="retrying")
    [second] = await claim(backend, token="t2", now=NOW + 1)
    assert (second.attempts, second.token) == (2, "t2")
    assert (await get(backend, job_id)).attempts == 2


async def test_a_claim_carries_the_stalls_so_far(backend: Backend) -> None:
    """attempts counts every run, stalled ones too; stalls is what rescues added."""
    [job_id] = await enqueue(backend, new_job(max_stalls=2))
    await claim(backend, token="t1")
    await finish(
        backend, job_id, "t1", state=JobState.QUEUED, run_at=NOW + 31, at=NOW + 31,
        event="stalled", stall=True, expired_before=NOW + 31,
    )  # fmt: skip
    [again] = await claim(backend, token="t2", now=NOW + 31)
    assert (again.attempts, again.stalls, again.max_stalls) == (2, 1, 2)


async def test_channels_filter(backend: Backend) -> None:
    a, b, c = await enqueue(
        backend, new_job(channel="a"), new_job(channel="b"), new_job(channel="c")
    )
    assert await claim_ids(backend, channels=("c", "a")) == [a, c]
    assert await claim_ids(backend, channels=("zzz",)) == []
    assert await claim_ids(backend, channels=None) == [b]


async def test_include_and_exclude_filter_names(backend: Backend) -> None:
    x1, y, z, x2 = await enqueue(backend, new_job("x"), new_job("y"), new_job("z"), new_job("x"))
    assert await claim_ids(backend, include=("x",)) == [x1, x2]
    assert await claim_ids(backend, exclude=("y",)) == [z]
    assert await claim_ids(backend, include=("y", "z"), exclude=("y",)) == []
    assert await claim_ids(backend) == [y]


async def test_filters_combine(backend: Backend) -> None:
    ids = await enqueue(
        backend,
        new_job("x", channel="a"),
        new_job("y", channel="a"),
        new_job("x", channel="b"),
    )
    assert await claim_ids(backend, channels=("a",), include=("x",)) == [ids[0]]
    assert await claim_ids(backend, channels=("a", "b"), exclude=("y",)) == [ids[2]]


async def test_paused_channels_are_skipped(backend: Backend) -> None:
    a, b = await enqueue(backend, new_job(channel="a"), new_job(channel="b"))
    await backend.set_paused("a", True)
    assert await claim_ids(backend) == [b]
    assert await claim_ids(backend, channels=("a",)) == []
    await backend.set_paused("a", False)
    assert await claim_ids(backend) == [a]


async def test_everything_paused_claims_nothing(backend: Backend) -> None:
    await enqueue(backend, new_job(channel="a"))
    await backend.set_paused(None, True)
    await enqueue(backend, new_job(channel="born-after-the-pause"))
    assert await claim_ids(backend) == []
    assert await claim_ids(backend, channels=("born-after-the-pause",)) == []


async def test_one_job_per_group_in_a_batch(backend: Backend) -> None:
    g1, _g2, other, _g3, h1 = await enqueue(
        backend,
        new_job(group="g"),
        new_job(group="g"),
        new_job(),
        new_job(group="g"),
        new_job(group="h"),
    )
    assert await claim_ids(backend, limit=10) == [g1, other, h1]


async def test_no_group_member_runs_while_another_runs(backend: Backend) -> None:
    g1, g2 = await enqueue(backend, new_job(group="g"), new_job(group="g"))
    assert await claim_ids(backend, token="t1") == [g1]
    assert await claim_ids(backend, token="t2") == []
    # a member enqueued later, and a different worker, still wait for the group
    [g3] = await enqueue(backend, new_job(group="g", priority=-10))
    assert await claim_ids(backend, token="t3", channels=("default",)) == []
    await finish(backend, g1, "t1")
    assert await claim_ids(backend, token="t4") == [g3]  # the group is free: its first job
    await finish(backend, g3, "t4", state=JobState.FAILED, error=None)
    assert await claim_ids(backend, token="t5") == [g2]


async def test_a_scheduled_group_member_does_not_block_the_due_one(backend: Backend) -> None:
    later, due = await enqueue(
        backend,
        new_job(group="g", run_at=NOW + 100),
        new_job(group="g"),
    )
    assert (await get(backend, later)).state == JobState.SCHEDULED
    assert await claim_ids(backend) == [due]


async def test_a_rescued_job_frees_its_group(backend: Backend) -> None:
    g1, g2 = await enqueue(backend, new_job(group="g"), new_job(group="g"))
    assert await claim_ids(backend, token="dead", lease=10) == [g1]
    assert await claim_ids(backend, now=NOW + 10) == []  # still leased: group busy
    await finish(
        backend,
        g1,
        "dead",
        state=JobState.QUEUED,
        run_at=NOW + 11,
        at=NOW + 11,
        event="stalled",
        expired_before=NOW + 11,
    )
    # both are queued now: the group gives one at a time, in claim order
    assert await claim_ids(backend, token="t2", now=NOW + 11) == [g2]


# -- ordered=False: any due jobs the filters allow, in no particular order ----------------


async def test_an_unordered_claim_takes_exactly_the_due_allowed_unpaused_jobs(
    backend: Backend,
) -> None:
    due = await enqueue(
        backend,
        *(new_job("x", priority=p, channel=c) for p in (3, -2, 0) for c in ("a", "b")),
    )
    await enqueue(
        backend,
        new_job("x", channel="a", state=JobState.QUEUED, run_at=NOW + 10),  # not due
        new_job("x", channel="a", state=JobState.SCHEDULED, run_at=NOW - 1),  # promote first
        new_job("y", channel="a"),  # not included
        new_job("x", channel="paused"),
    )
    await backend.set_paused("paused", True)
    kw = {"ordered": False, "include": ("x",)}
    taken = await claim_ids(backend, limit=100, channels=("a", "b", "paused"), **kw)
    assert sorted(taken) == sorted(due)
    assert await claim_ids(backend, limit=100, **kw) == []
    # the same through each filter variant (every channel, one, several)
    more = await enqueue(backend, new_job("x", channel="a"), new_job("x", channel="b"))
    assert await claim_ids(backend, channels=("a",), **kw) == [more[0]]
    assert await claim_ids(backend, exclude=("y",), ordered=False) == [more[1]]


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_an_unordered_claim_respects_the_limit(backend: Backend, limit: int) -> None:
    ids = await enqueue(backend, *(new_job(str(i)) for i in range(5)))
    seen: list[int] = []
    while batch := await claim_ids(backend, limit=limit, ordered=False):
        assert len(batch) == min(limit, 5 - len(seen))
        assert not set(batch) & set(seen)  # never claimed twice
        seen += batch
    assert sorted(seen) == ids


async def test_an_unordered_claim_respects_groups(backend: Backend) -> None:
    g1, g2, other, h1 = await enqueue(
        backend, new_job(group="g"), new_job(group="g"), new_job(), new_job(group="h")
    )
    first = await claim_ids(backend, token="t1", ordered=False)
    assert len(first) == 3 and set(first) >= {other, h1}  # one per group in a batch
    [g] = set(first) & {g1, g2}
    assert await claim_ids(backend, token="t2", ordered=False) == []  # the group is busy
    await finish(backend, g, "t1")
    assert await claim_ids(backend, token="t3", ordered=False) == [({g1, g2} - {g}).pop()]


async def test_an_unordered_complete_and_claim_claims_too(backend: Backend) -> None:
    a, b, c = await enqueue(backend, new_job("a"), new_job("b"), new_job("c"))
    [first] = await claim_ids(backend, token="t1", limit=1, ordered=False)
    applied, jobs = await backend.complete_and_claim(
        [outcome(first, "t1")], claim_params(token="t2", limit=10, ordered=False)
    )
    assert applied == [True]
    assert sorted([first, *(j.id for j in jobs)]) == [a, b, c]
