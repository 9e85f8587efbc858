"""Flow control on Redis only: lanes skip a held-back key's backlog in one step (100,000
jobs), claims without limits keep their script, stale lane entries and lapsed lanes,
group slots beyond one, and the hand-off leaving limited jobs to claims (the shared
contract is in ``test_limits.py``)."""

from __future__ import annotations

import math
import time

import pytest
import redis.asyncio as aioredis

from conveyor.backends.base import Backend, ClaimLimit, EnqueueParams, PruneParams
from conveyor.backends.redis import codec
from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.scripts import Scripts
from conveyor.models import JobState
from tests.backends.conftest import Store
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
)

BACKLOG = 100_000


def by_name(name: str, n: int, key: str | None = None, per: float | None = None) -> ClaimLimit:
    return ClaimLimit("name", name, key, n, per)


async def enqueue_many(backend: Backend, count: int, **kw: object) -> None:
    for start in range(0, count, 5000):
        jobs = [new_job(**kw) for _ in range(min(5000, count - start))]  # type: ignore[arg-type]
        await backend.enqueue_many(EnqueueParams(jobs, NOW))


async def timed(backend: Backend, **kw: object) -> tuple[list[int], float]:
    started = time.perf_counter()
    ids = await claim_ids(backend, **kw)
    return ids, time.perf_counter() - started


def test_a_claim_without_limits_runs_the_script_it_always_ran() -> None:
    bodies = Scripts().bodies
    for name in ("claim", "complete_claim"):
        for definition in ("claim_limited", "read_limits", "lanes_use", "within_limits"):
            assert f"local function {definition}" not in bodies[name]
    assert "local function claim_limited" in bodies["claim_limited"]
    assert "local function claim_limited" in bodies["complete_claim_limited"]


@pytest.mark.parametrize("key", [None, "tenant"])
async def test_a_full_key_with_a_huge_backlog_is_skipped_in_one_step(
    backend: Backend, key: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 queued jobs of one full key come first in claim order; the claim still
    returns the allowed jobs behind them, and quickly (once the lanes exist)."""
    [running] = await enqueue(backend, new_job("busy", tenant="a", priority=-5))
    limits = (by_name("busy", 1, key=key),)
    assert await claim_ids(backend, token="r") == [running]  # no lanes yet
    await enqueue_many(backend, BACKLOG, name="busy", tenant="a", priority=-5)
    allowed = await enqueue(backend, *(new_job("ok") for _ in range(5)))
    first, build = await timed(backend, token="a", limit=6, limits=limits)
    assert first == allowed  # the first claim with limits builds the channel's lanes
    more = await enqueue(backend, *(new_job("ok") for _ in range(20)))
    times = []
    for k in range(4):
        ids, took = await timed(backend, token=f"b{k}", limit=5, limits=limits)
        assert ids == more[5 * k : 5 * k + 5]
        times.append(took)
    with capsys.disabled():
        print(
            f"\n  redis, key={key}: {BACKLOG} held back ahead; first claim (builds the "
            f"lanes) {build * 1000:.0f} ms, then {min(times) * 1000:.2f}-"
            f"{max(times) * 1000:.2f} ms"
        )
    assert max(times) < 0.05
    assert (await backend.counts(None))["queued"] == BACKLOG


async def test_a_later_backlog_of_a_full_key_costs_nothing_either(backend: Backend) -> None:
    """Lanes that exist are kept by every enqueue: no rebuild, still one step."""
    limits = (by_name("busy", 1),)
    # lanes on (a channel's lanes are built by the first claim with limits that reads it)
    assert await claim_ids(backend, token="warm", limits=limits, channels=("default",)) == []
    await enqueue_many(backend, BACKLOG, name="busy", priority=-5)
    allowed = await enqueue(backend, *(new_job("ok") for _ in range(5)))
    ids, took = await timed(backend, token="a", limit=6, limits=limits)
    assert ids[1:] == allowed and len(ids) == 6
    assert took < 0.05
    ids, took = await timed(backend, token="b", limit=6, limits=limits)
    assert ids == []
    assert took < 0.05


async def test_jobs_taken_by_claims_without_limits_are_dropped_from_lanes(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    keys = Keys(store.token)
    limits = (by_name("x", 10),)
    # lanes on (a channel's lanes are built by the first claim with limits that reads it)
    assert await claim_ids(backend, token="warm", limits=limits, channels=("default",)) == []
    ids = await enqueue(backend, *(new_job("x") for _ in range(6)))
    assert await claim_ids(backend, token="plain", limit=4) == ids[:4]
    # they left their lane at once, and the lane's head moved on
    [lane] = [k async for k in client.scan_iter(match=keys.base + "lane:*")]
    assert await client.zcard(lane) == 2
    [head] = await client.zrange(keys.base + "lh:default", 0, -1)
    assert head == (await client.zrange(lane, 0, 0))[0] + lane.removeprefix(keys.base + "lane:")
    taken = await claim(backend, token="lim", limits=limits)
    assert [j.id for j in taken] == ids[4:]
    assert await client.zcard(keys.base + "lh:default") == 0
    assert await client.smembers(keys.base + "lreg:default") == set()
    lanes = [k async for k in client.scan_iter(match=keys.base + "lane:*")]
    assert lanes == []


async def test_prune_drops_lanes_no_claim_uses(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    keys = Keys(store.token)
    await enqueue(backend, new_job("x"), new_job("y", channel="other"))
    limits = (by_name("z", 1),)
    assert await claim_ids(backend, limits=limits, include=("none",)) == []  # lanes on
    assert await claim_ids(backend, limits=limits, channels=("other",)) != []
    assert await client.exists(keys.base + "lon:other")
    await client.delete(keys.base + "lon:default")  # as if its TTL lapsed
    await backend.prune(PruneParams(JobState.COMPLETED, NOW, 10))
    assert await client.smembers(keys.base + "lchans") == {"other"}
    left = {k async for k in client.scan_iter(match=keys.base + "l*")}
    assert not any(k.endswith(":default") or "1:x" in k for k in left)
    # a claim with limits builds them again, from the queued jobs
    [x] = await claim(backend, limits=limits)
    assert x.name == "x"


async def test_a_group_limit_keeps_the_group_busy_until_its_last_member_ends(
    backend: Backend,
) -> None:
    ids = await enqueue(backend, *(new_job("acct", group="g") for _ in range(3)))
    [plain] = await enqueue(backend, new_job("plain", group="g"))
    limits = (by_name("acct", 3, key="group"),)
    assert await claim_ids(backend, token="a", limits=limits) == ids
    for job_id in ids[:2]:
        await finish(backend, job_id, "a")
        assert await claim_ids(backend, token="p", include=("plain",)) == []
    await finish(backend, ids[2], "a")
    assert await claim_ids(backend, token="p", include=("plain",)) == [plain]


async def test_complete_and_claim_applies_limits_to_the_freed_slot(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job("one") for _ in range(3)))
    limits = (by_name("one", 1), by_name("one", 5, per=60.0))
    assert await claim_ids(backend, token="a", limits=limits) == [ids[0]]
    done, taken = await backend.complete_and_claim(
        [outcome(ids[0], "a")], claim_params(token="b", limits=limits)
    )
    assert done == [True]
    assert [j.id for j in taken] == [ids[1]]
    assert (await get(backend, ids[2])).state == JobState.QUEUED


async def test_a_rate_counts_starts_of_every_worker_and_prunes_old_ones(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    limits = (by_name("api", 1, per=5.0),)
    assert await claim_ids(backend, token="a", limits=limits, now=NOW) == [ids[0]]
    assert await claim_ids(backend, token="b", limits=limits, now=NOW + 4.9) == []
    assert await claim_ids(backend, token="c", limits=limits, now=NOW + 5) == [ids[1]]
    [key] = [k async for k in client.scan_iter(match=Keys(store.token).base + "rs:*")]
    # one span per start: the one at NOW left the window but is kept a second (slack)
    assert sorted((await client.hgetall(key)).values()) == [f"1:{NOW!r}", f"1:{NOW + 5!r}"]
    assert await claim_ids(backend, token="d", limits=limits, now=NOW + 6.5) == []
    assert list((await client.hgetall(key)).values()) == [f"1:{NOW + 5!r}"]
    # the starts of one claim share its span: one entry with their count
    many = (by_name("api", 10, per=5.0),)
    assert await claim_ids(backend, token="e", limits=many, now=NOW + 10.5) == ids[2:]
    assert sorted((await client.hgetall(key)).values()) == [f"1:{NOW + 5!r}", f"2:{NOW + 10.5!r}"]


async def test_a_standing_claim_is_not_handed_jobs_its_limits_cover(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    keys = Keys(store.token)
    params = claim_params(
        token="stand", limit=5, limits=(by_name("lim", 1),), fair=(("fair", "tenant"),)
    )
    await client.hset(keys.waiters, "w", codec.registration(params, NOW + 10))
    limited, fair, free = await enqueue(
        backend, new_job("lim"), new_job("f", channel="fair"), new_job("free")
    )
    assert [(await get(backend, i)).state for i in (limited, fair, free)] == [
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.RUNNING,
    ]
    [member] = await client.zrange(keys.hand("w"), 0, -1)
    assert [j.id for j in codec.handed_from_member(member)] == [free]


async def test_a_span_keeps_its_latest_start_when_a_claimer_is_behind(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    # a claimer whose clock is behind adds its start to the span of another one that is
    # ahead: the span still counts until the later start leaves the window
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    limits = (by_name("api", 2, per=5.0),)
    w = 0.1  # rate_span(5.0)
    s = (math.floor(NOW / w) + 1) * w
    ahead, behind = s + 0.08, s + 0.02
    assert await claim_ids(backend, token="a", limit=1, limits=limits, now=ahead) == [ids[0]]
    assert await claim_ids(backend, token="b", limit=1, limits=limits, now=behind) == [ids[1]]
    [key] = [k async for k in client.scan_iter(match=Keys(store.token).base + "rs:*")]
    assert list((await client.hgetall(key)).values()) == [f"2:{ahead!r}"]
    # both starts count while the later one is in the window, one more may start after
    assert await claim_ids(backend, token="c", limit=4, limits=limits, now=ahead + 4.97) == []
    assert len(await claim_ids(backend, token="d", limit=4, limits=limits, now=ahead + 5.05)) == 2


async def test_a_lane_keeps_its_head_when_a_plain_claim_passes_it_over(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    # the lane's first member is not due yet: a claim takes the one behind it, and the
    # lane's head stays where it was; once that member is taken, the head moves on
    keys = Keys(store.token)
    limits = (by_name("x", 10),)
    assert await claim_ids(backend, token="warm", limits=limits, channels=("default",)) == []
    [later] = await enqueue(
        backend, new_job("x", priority=-1, run_at=NOW + 60, state=JobState.QUEUED)
    )
    due = await enqueue(backend, new_job("x"), new_job("x"))
    assert await claim_ids(backend, token="plain", limit=1) == due[:1]
    [lane] = [k async for k in client.scan_iter(match=keys.base + "lane:*")]
    lid = lane.removeprefix(keys.base + "lane:")
    [head] = await client.zrange(keys.base + "lh:default", 0, -1)
    assert head == (await client.zrange(lane, 0, 0))[0] + lid
    assert await client.zcard(lane) == 2  # the one not due yet, and the other due one
    assert await claim_ids(backend, token="later", limit=5, now=NOW + 61) == [later, due[1]]
    assert await client.zcard(keys.base + "lh:default") == 0
    assert not await client.exists(lane)
