"""Flow control in the claim: concurrency and rate limits (ClaimLimit), fairness, and the
stored channel limits. The contract is in ``ClaimLimit``, ``ClaimParams.limits`` /
``ClaimParams.fair`` and ``ChannelLimitRecord``."""

from __future__ import annotations

from collections import Counter

from conveyor.backends.base import Backend, ChannelLimitRecord, ClaimLimit
from conveyor.limits import rate_span
from conveyor.models import JobState
from tests.backends.helpers import NOW, claim, claim_ids, enqueue, finish, get, new_job


def by_name(name: str, n: int, key: str | None = None, per: float | None = None) -> ClaimLimit:
    return ClaimLimit("name", name, key, n, per)


async def test_a_name_limit_caps_running_jobs_across_claims(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job("sync") for _ in range(5)), new_job("free"))
    limits = (by_name("sync", 2),)
    first = await claim_ids(backend, token="a", limit=10, limits=limits)
    assert sorted(first) == sorted([*ids[:2], ids[5]])  # two of sync, and the free job
    assert await claim_ids(backend, token="b", limit=10, limits=limits) == []
    await finish(backend, ids[0], "a")
    assert await claim_ids(backend, token="c", limit=10, limits=limits) == [ids[2]]
    for job_id in ids[3:5]:
        assert (await get(backend, job_id)).state == JobState.QUEUED
        assert (await get(backend, job_id)).attempts == 0  # held back: no attempt used


async def test_a_limit_keyed_by_group_allows_n_per_group(backend: Backend) -> None:
    jobs = [new_job("acct", group=f"g{i % 2}") for i in range(8)]
    ids = await enqueue(backend, *jobs)
    limits = (by_name("acct", 3, key="group"),)
    taken = await claim(backend, token="a", limit=10, limits=limits)
    per_group = Counter(j.group for j in taken)
    assert per_group == {"g0": 3, "g1": 3}  # the limit replaces one-at-a-time
    assert await claim_ids(backend, token="b", limit=10, limits=limits) == []
    # without that limit, groups keep their one-at-a-time rule for other names
    other = await enqueue(backend, new_job("plain", group="g7"), new_job("plain", group="g7"))
    assert await claim_ids(backend, token="c", limit=10, include=("plain",)) == [other[0]]
    assert len(ids) == 8


async def test_a_limit_keyed_by_tenant_counts_each_tenant(backend: Backend) -> None:
    jobs = [new_job("t", tenant="a") for _ in range(3)] + [
        new_job("t", tenant="b") for _ in range(3)
    ]
    jobs.append(new_job("t"))  # no tenant: a count of its own
    await enqueue(backend, *jobs)
    taken = await claim(backend, token="a", limit=20, limits=(by_name("t", 1, key="tenant"),))
    assert sorted((j.tenant or "") for j in taken) == ["", "a", "b"]


async def test_a_channel_limit_caps_the_channel(backend: Backend) -> None:
    await enqueue(
        backend,
        *(new_job(f"n{i}", channel="mail") for i in range(4)),
        new_job("x", channel="other"),
    )
    limits = (ClaimLimit("channel", "mail", None, 2),)
    taken = await claim(backend, token="a", limit=10, limits=limits)
    assert Counter(j.channel for j in taken) == {"mail": 2, "other": 1}


async def test_a_rate_limits_starts_in_a_sliding_window(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job("api") for _ in range(6)))
    limits = (by_name("api", 2, per=10.0),)
    first = await claim_ids(backend, token="a", limit=10, limits=limits, now=NOW)
    assert first == ids[:2]
    for job_id in first:  # finishing does not give a start back
        await finish(backend, job_id, "a", at=NOW + 1)
    assert await claim_ids(backend, token="b", limit=10, limits=limits, now=NOW + 9.9) == []
    # free again once the starts' span (NOW is a span's start) has left the window
    later = NOW + 10.0 + rate_span(10.0)
    assert await claim_ids(backend, token="c", limit=10, limits=limits, now=later) == ids[2:4]
    assert await claim_ids(backend, token="d", limit=10, limits=limits, now=NOW + 15) == []
    assert await claim_ids(backend, token="e", limit=1, limits=limits, now=NOW + 20.5) == [ids[4]]


async def test_a_rate_never_undercounts_starts_that_share_a_span(backend: Backend) -> None:
    """Starts at NOW and just before the span's end: a claim whose window still holds
    the later one never takes more than an exact count allows, and once the whole span
    has left the window the rate is free again."""
    span = rate_span(10.0)
    ids = await enqueue(backend, *(new_job("api") for _ in range(6)))
    limits = (by_name("api", 2, per=10.0),)
    assert await claim_ids(backend, token="a", limit=1, limits=limits, now=NOW) == ids[:1]
    at = NOW + span * 0.9
    assert await claim_ids(backend, token="b", limit=1, limits=limits, now=at) == ids[1:2]
    assert await claim_ids(backend, token="c", limit=10, limits=limits, now=at + 5) == []
    # the exact count at NOW + 10 + span/2 is 1 (the start at NOW has left): at most 1
    half = await claim_ids(backend, token="d", limit=10, limits=limits, now=NOW + 10 + span / 2)
    assert half in ([], ids[2:3])
    rest = await claim_ids(backend, token="e", limit=10, limits=limits, now=NOW + 10 + span)
    assert half + rest == ids[2:4]
    assert await claim_ids(backend, token="f", limit=10, limits=limits, now=NOW + 10 + span) == []


async def test_held_back_jobs_never_leave_a_slot_idle(backend: Backend) -> None:
    blocked = await enqueue(backend, *(new_job("busy", priority=-5) for _ in range(300)))
    allowed = await enqueue(backend, *(new_job("ok") for _ in range(5)))
    limits = (by_name("busy", 1),)
    first = await claim_ids(backend, token="a", limit=6, limits=limits)
    assert first == [blocked[0], *allowed]  # one of busy, then the allowed ones behind it


async def test_fairness_round_robins_tenants_within_a_channel(backend: Backend) -> None:
    a = await enqueue(backend, *(new_job("f", tenant="a", channel="fair") for _ in range(20)))
    b = await enqueue(backend, *(new_job("f", tenant="b", channel="fair") for _ in range(2)))
    c = await enqueue(backend, new_job("f", tenant="c", channel="fair"))
    taken = await claim_ids(backend, token="a", limit=6, fair=(("fair", "tenant"),))
    assert taken[:3] == [a[0], b[0], c[0]]  # one of each before any second
    assert taken[3:5] == [a[1], b[1]]
    assert taken[5] == a[2]


async def test_fairness_keeps_priority_within_a_tenant(backend: Backend) -> None:
    low = await enqueue(backend, new_job("f", tenant="a", channel="fair", priority=5))
    high = await enqueue(backend, new_job("f", tenant="a", channel="fair", priority=-5))
    other = await enqueue(backend, new_job("f", tenant="b", channel="fair", priority=9))
    taken = await claim_ids(backend, token="a", limit=3, fair=(("fair", "tenant"),))
    assert taken == [high[0], other[0], low[0]]


async def test_no_limits_claims_as_before(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job("plain") for _ in range(3)))
    assert await claim_ids(backend, token="a", limit=10, limits=(), fair=()) == ids


async def test_channel_limits_are_stored_replaced_and_cleared(backend: Backend) -> None:
    assert await backend.list_channel_limits() == []
    mail = ChannelLimitRecord("mail", concurrency=20, rate_n=50, rate_per=1.0, fair_by="tenant")
    await backend.set_channel_limits(mail)
    await backend.set_channel_limits(ChannelLimitRecord("é", fair_by="group"))
    assert await backend.list_channel_limits() == [mail, ChannelLimitRecord("é", fair_by="group")]
    await backend.set_channel_limits(ChannelLimitRecord("mail", concurrency=5))
    assert (await backend.list_channel_limits())[0] == ChannelLimitRecord("mail", concurrency=5)
    await backend.set_channel_limits(ChannelLimitRecord("mail"))
    assert await backend.list_channel_limits() == [ChannelLimitRecord("é", fair_by="group")]


async def test_a_rescued_job_frees_its_limit_slot(backend: Backend) -> None:
    ids = await enqueue(backend, new_job("one"), new_job("one"))
    limits = (by_name("one", 1),)
    assert await claim_ids(backend, token="dead", limit=5, limits=limits, lease=5) == [ids[0]]
    assert await claim_ids(backend, token="b", limit=5, limits=limits, now=NOW + 1) == []
    # the dead worker's job is rescued (its lease expired): the slot is free again
    await finish(backend, ids[0], "dead", state=JobState.QUEUED, run_at=NOW + 60, at=NOW + 6,
                 expired_before=NOW + 6, stall=True, event="stalled")  # fmt: skip
    assert await claim_ids(backend, token="c", limit=5, limits=limits, now=NOW + 6) == [ids[1]]


async def test_a_limited_claim_finds_allowed_jobs_behind_a_filtered_backlog(
    backend: Backend,
) -> None:
    # a claim that reads its candidates in claim order first must not stop short when
    # that order starts with more jobs than it examines that its filter leaves out
    await enqueue(backend, *(new_job("a") for _ in range(1100)))
    allowed = await enqueue(backend, *(new_job("b") for _ in range(3)))
    limits = (by_name("b", 10),)
    assert await claim_ids(backend, token="x", limit=3, limits=limits, include=("b",)) == allowed
