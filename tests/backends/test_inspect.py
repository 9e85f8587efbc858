"""Inspection: get_job, list_jobs (every JobFilter field), counts, channel_stats."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend, ChannelStats, JobFilter
from conveyor.models import Job, JobState
from tests.backends.helpers import NOW, claim_ids, enqueue, new_job, one_in_each_state


async def listed(backend: Backend, **kw: object) -> list[int]:
    return [j.id for j in await backend.list_jobs(JobFilter(**kw))]  # type: ignore[arg-type]


async def test_get_job(backend: Backend) -> None:
    assert await backend.get_job(123_456) is None
    [job_id] = await enqueue(backend, new_job("x"))
    job = await backend.get_job(job_id)
    assert isinstance(job, Job) and (job.id, job.name) == (job_id, "x")


async def test_get_job_with_a_tenant_returns_only_that_tenants_job(backend: Backend) -> None:
    [acme, untenanted] = await enqueue(backend, new_job("x", tenant="acme"), new_job("y"))
    job = await backend.get_job(acme, "acme")
    assert job is not None and job.tenant == "acme"
    assert await backend.get_job(acme, "globex") is None
    assert await backend.get_job(untenanted, "acme") is None
    assert await backend.get_job(acme + untenanted + 1000, "acme") is None
    assert (await backend.get_job(untenanted)) is not None  # no tenant given: no filter


async def test_list_jobs_is_newest_first_and_pages_by_id(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job(str(i)) for i in range(5)))
    newest_first = ids[::-1]
    assert await listed(backend) == newest_first
    assert all(isinstance(j, Job) for j in await backend.list_jobs(JobFilter()))
    assert await listed(backend, limit=2) == newest_first[:2]
    assert await listed(backend, limit=2, before_id=newest_first[1]) == newest_first[2:4]
    assert await listed(backend, limit=2, before_id=newest_first[3]) == newest_first[4:]
    assert await listed(backend, limit=2, before_id=ids[0]) == []
    assert await listed(backend, before_id=ids[-1] + 1000) == newest_first


async def test_list_jobs_by_state(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    for state, job_id in ids.items():
        assert await listed(backend, state=state) == [job_id], state


async def test_list_jobs_by_name_channel_and_tenant(backend: Backend) -> None:
    a, b, c, d = await enqueue(
        backend,
        new_job("x", channel="one", tenant="t1"),
        new_job("y", channel="one"),
        new_job("x", channel="two", tenant="t2"),
        new_job("x", channel="one", tenant="t1"),
    )
    assert await listed(backend, name="x") == [d, c, a]
    assert await listed(backend, channel="one") == [d, b, a]
    assert await listed(backend, tenant="t1") == [d, a]
    assert await listed(backend, name="x", channel="one", tenant="t1", limit=1) == [d]
    assert await listed(backend, name="nope") == []
    assert await listed(backend, state=JobState.RUNNING, name="x") == []
    await claim_ids(backend, include=("y",))
    assert await listed(backend, state=JobState.RUNNING, channel="one") == [b]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("any", {"a", "ab", "bc", "abc"}),  # shares a tag with (a, b)
        ("all", {"ab", "abc"}),  # has both a and b
        ("exact", {"ab"}),  # has exactly {a, b}
        ("none", {"c", "untagged"}),  # has neither a nor b
    ],
)
async def test_list_jobs_by_tags(backend: Backend, mode: str, expected: set[str]) -> None:
    jobs = {
        "a": ("a",),
        "ab": ("b", "a"),
        "bc": ("b", "c"),
        "abc": ("a", "b", "c"),
        "c": ("c",),
        "untagged": (),
    }
    ids = dict(
        zip(
            jobs,
            await enqueue(backend, *(new_job(n, tags=t) for n, t in jobs.items())),
            strict=True,
        )
    )
    got = await backend.list_jobs(JobFilter(tags=("a", "b"), tag_mode=mode))
    assert {j.name for j in got} == expected
    assert [j.id for j in got] == sorted((ids[n] for n in expected), reverse=True)
    # the order of the filter's tags does not matter
    again = await backend.list_jobs(JobFilter(tags=("b", "a"), tag_mode=mode))
    assert {j.name for j in again} == expected
    # combined with the other fields
    assert await listed(backend, tags=("a", "b"), tag_mode=mode, name="none-such") == []


async def test_list_jobs_without_a_tag_filter_lists_tagged_and_untagged(backend: Backend) -> None:
    ids = await enqueue(backend, new_job(tags=("a",)), new_job())
    assert await listed(backend, tags=None) == ids[::-1]


async def test_counts_has_every_state(backend: Backend) -> None:
    empty = await backend.counts(None)
    assert empty == {state.value: 0 for state in JobState}
    await one_in_each_state(backend, channel="one")
    await one_in_each_state(backend, channel="two")
    await enqueue(backend, new_job(channel="two"))
    every = {state.value: 2 for state in JobState} | {"queued": 3}
    assert await backend.counts(None) == every
    assert await backend.counts("one") == {state.value: 1 for state in JobState}
    assert await backend.counts("two") == {state.value: 1 for state in JobState} | {"queued": 2}
    assert await backend.counts("nowhere") == {state.value: 0 for state in JobState}


async def test_channel_stats(backend: Backend) -> None:
    assert await backend.channel_stats() == []
    await one_in_each_state(backend, channel="busy")  # its queued job: run_at NOW
    await enqueue(
        backend,
        new_job(channel="busy", run_at=NOW - 50, state=JobState.QUEUED),
        new_job(channel="busy", run_at=NOW - 20, state=JobState.QUEUED),
        new_job(channel="later", run_at=NOW + 500),
    )
    stats = {s.channel: s for s in await backend.channel_stats()}
    assert set(stats) == {"busy", "later"}
    assert all(isinstance(s, ChannelStats) for s in stats.values())
    nonzero = {ch: {k: v for k, v in s.counts.items() if v} for ch, s in stats.items()}
    assert nonzero == {
        "busy": {state.value: 1 for state in JobState} | {"queued": 3},
        "later": {"scheduled": 1},
    }
    assert stats["busy"].oldest_queued_run_at == NOW - 50
    assert stats["later"].oldest_queued_run_at is None
