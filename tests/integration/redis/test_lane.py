"""The Redis hot path: the lane's own connections, the wake-up's fallbacks, the one-call
complete-and-claim, and the per-script selection of the Lua library."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from conveyor.backends.base import Outcome
from conveyor.backends.redis import scripts
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.lane import Lane
from conveyor.backends.redis.scripts import SCRIPT_NAMES, Scripts
from conveyor.errors import BackendError
from conveyor.models import JobState
from tests.integration.redis.helpers import (
    NOW,
    OwnRedis,
    claim_params,
    enqueue,
    new_job,
    wait_until,
)


def _blocked(url: str, **match: Any) -> bool:
    """Whether a client with these CLIENT LIST fields (e.g. id=, name=) is blocked."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return any(
            "b" in c["flags"] and all(c.get(k) == str(v) for k, v in match.items())
            for c in client.client_list()
        )


def _waiting(backend: RedisBackend, url: str) -> bool:
    """Whether the backend's wake-up pop is blocked in Redis."""
    client_id = backend._waker._conn.client_id  # type: ignore[union-attr]
    return client_id is not None and _blocked(url, id=client_id)


@pytest.fixture
def lane_name() -> str:
    return "lane-" + uuid.uuid4().hex[:8]


@pytest.fixture
async def lane(redis_url: str, prefix: str, lane_name: str) -> AsyncIterator[Lane]:
    from redis.asyncio import ConnectionPool
    from redis.asyncio.connection import AbstractConnection

    pool = ConnectionPool.from_url(redis_url, decode_responses=True, client_name=lane_name)

    def factory() -> AbstractConnection:
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        return conn

    lane = Lane(factory, Scripts(), Keys(prefix), timeout=0.5, max_connections=4)
    yield lane
    await lane.close()
    await pool.aclose()


# -- the lane -------------------------------------------------------------------------------


async def test_a_cancelled_call_never_leaves_its_reply_for_the_next(
    lane: Lane, redis_url: str, prefix: str, lane_name: str
) -> None:
    key = f"{{{prefix}}}:list"
    pending = asyncio.ensure_future(lane.command("BLPOP", key, "0.4"))
    await wait_until(lambda: _blocked(redis_url, name=lane_name))
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    with redis.Redis.from_url(redis_url) as client:
        client.rpush(key, "late")  # the cancelled BLPOP's server side would take this
    assert await lane.command("PING") == "PONG"  # not the late reply
    assert await lane.command("LRANGE", key, "0", "-1") in (["late"], [])
    assert await lane.command("ECHO", "next") == "next"


async def test_a_call_that_outlives_its_timeout_fails_and_the_lane_recovers(
    lane: Lane, prefix: str
) -> None:
    with pytest.raises(BackendError, match=r"no reply within 0\.5s"):
        await lane.command("BLPOP", f"{{{prefix}}}:nothing", "2")
    assert await lane.command("PING") == "PONG"
    assert await lane.command("ECHO", "x") == "x"


async def test_error_replies_keep_the_connection_and_raise_backend_error(lane: Lane) -> None:
    assert await lane.command("PING") == "PONG"
    [conn] = lane._idle
    with pytest.raises(BackendError, match="unknown command"):
        await lane.command("NO-SUCH-COMMAND")
    assert await lane.command("ECHO", "é") == "é"
    assert list(lane._idle) == [conn]


async def test_concurrent_calls_each_get_their_own_reply(lane: Lane) -> None:
    words = [f"w{i}-é" for i in range(40)]
    replies = await asyncio.gather(*(lane.command("ECHO", w) for w in words))
    assert replies == words


@pytest.mark.slow  # a private redis-server: SCRIPT FLUSH must not touch the shared one
async def test_scripts_run_on_the_lane_and_reload_after_a_flush(
    own_redis: OwnRedis, prefix: str
) -> None:
    from redis.asyncio import ConnectionPool
    from redis.asyncio.connection import AbstractConnection

    pool = ConnectionPool.from_url(own_redis.url, decode_responses=True)

    def factory() -> AbstractConnection:
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        return conn

    lane = Lane(factory, Scripts(), Keys(prefix), timeout=5, max_connections=4)
    try:
        assert await lane.script("cron_list", []) == []  # never loaded: NOSCRIPT, load, run
        with own_redis.client() as client:
            client.script_flush()
        assert await lane.script("cron_delete", ["a", "b"]) == 0
        assert await lane.script("cron_list", []) == []
    finally:
        await lane.close()
        await pool.aclose()


async def test_a_closed_lane_refuses_new_connections(lane: Lane) -> None:
    await lane.close()
    with pytest.raises(BackendError, match="closed"):
        await lane.command("PING")


# -- complete and claim in one call -----------------------------------------------------------


async def test_complete_and_claim_sees_what_its_outcomes_changed(backend: RedisBackend) -> None:
    first, second = await enqueue(backend, new_job("a"), new_job("b", priority=5))
    [job] = await backend.claim(claim_params(token="t1", limit=1))
    assert job.id == first
    requeue = Outcome(job_id=first, token="t1", state=JobState.QUEUED, at=NOW, event="retrying",
                      run_at=NOW, refund_attempt=True)  # fmt: skip
    applied, claimed = await backend.complete_and_claim([requeue], claim_params(token="t2"))
    assert applied == [True]
    assert [(j.id, j.attempts, j.token) for j in claimed] == [(first, 1, "t2"), (second, 1, "t2")]


async def test_complete_and_claim_with_a_stale_token_changes_nothing(
    backend: RedisBackend,
) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params(token="t1"))
    stale = Outcome(job_id=job_id, token="old", state=JobState.COMPLETED, at=NOW,
                    event="completed")  # fmt: skip
    assert await backend.complete_and_claim([stale], claim_params(token="t2")) == ([False], [])
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING


# -- the wake-up --------------------------------------------------------------------------------


@pytest.mark.parametrize("unblock", ["fails", "too early"])
async def test_wake_ends_the_wait_when_client_unblock_cannot(
    backend: RedisBackend, redis_url: str, unblock: str
) -> None:
    waker: Any = backend._waker

    async def no_unblock(client_id: int) -> int:
        if unblock == "fails":
            raise BackendError("CLIENT UNBLOCK is not allowed here")
        return 0  # the pop had not reached the server yet

    waker._unblock = no_unblock
    await backend.wait_for_work(0.01)
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await wait_until(lambda: _waiting(backend, redis_url))
    backend.wake()  # falls back to dropping the blocking connection
    await asyncio.wait_for(waiting, 5)
    # the next wait reconnects and still wakes on work
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await wait_until(lambda: _waiting(backend, redis_url))
    await enqueue(backend, new_job())
    await asyncio.wait_for(waiting, 5)


async def test_cancelling_a_wait_drops_its_pop(backend: RedisBackend, redis_url: str) -> None:
    await backend.wait_for_work(0.01)
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await wait_until(lambda: _waiting(backend, redis_url))
    client_id = backend._waker._conn.client_id  # type: ignore[union-attr]
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await wait_until(lambda: not _blocked(redis_url, id=client_id))
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await wait_until(lambda: _waiting(backend, redis_url))
    await enqueue(backend, new_job())
    await asyncio.wait_for(waiting, 5)


# -- the Lua library, per script ------------------------------------------------------------------


def test_each_script_gets_only_the_library_it_uses() -> None:
    bodies = Scripts().bodies
    assert set(bodies) == set(SCRIPT_NAMES)
    assert "local function claim_jobs" in bodies["claim"]
    assert "local function complete_outcomes" in bodies["complete"]
    for name in ("claim_jobs", "complete_outcomes", "apply_outcome"):
        assert f"local function {name}" in bodies["complete_claim"]
        assert f"local function {name}" not in bodies["enqueue"]
        assert f"local function {name}" not in bodies["set_progress"]
    for name in ("load_waiters", "waiter_for", "hand_over"):  # the hand-off
        assert f"local function {name}" in bodies["enqueue"]
        assert f"local function {name}" not in bodies["claim"]
        assert f"local function {name}" not in bodies["cron_fire"]
    for body in (bodies["claim"], bodies["enqueue"]):  # what a claim sets on a job
        assert "local function lease_fields" in body
    assert "local function write_job" in bodies["enqueue"]
    assert "local function write_job" in bodies["cron_fire"]  # through enqueue_one
    for body in bodies.values():  # every script flushes its deferred writes
        assert "local function flush_later" in body and "local K = {" in body
    assert "marker_ch = " in bodies["enqueue"] and "cron = " not in bodies["enqueue"]


def test_the_library_selection_follows_uses_and_refuses_other_top_level_code() -> None:
    lib = (
        "-- a comment\n"
        "local A = 1\n"
        "\n"
        "local function f(x)\n"
        "  -- g is only mentioned here\n"
        "  return x + A\n"
        "end\n"
        "local function g() return f(1) end\n"
        "local B, C = {}, {}\n"
    )
    definitions = scripts._definitions(lib)
    assert [d.names for d in definitions] == [("A",), ("f",), ("g",), ("B", "C")]
    assert scripts._library_for(definitions, "return g()") == lib[: lib.index("local B")]
    assert scripts._library_for(definitions, "return f(C)") == (
        lib[: lib.index("local function g")] + "local B, C = {}, {}\n"
    )
    assert scripts._library_for(definitions, "-- f g\nreturn 1") == ""
    with pytest.raises(ValueError, match="not a definition"):
        scripts._definitions("local A = 1\nA = 2\n")
    with pytest.raises(ValueError, match="not a local definition"):
        scripts._definitions("local\n")


async def test_every_script_loads(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        shas = Scripts().shas
        for name, body in Scripts().bodies.items():
            assert client.script_load(body) == shas[name]


async def test_throughput_smoke(backend: RedisBackend) -> None:
    """Many sequential enqueues and claims on the lane keep every id and reply in order."""
    ids = [(await enqueue(backend, new_job(f"n{i}")))[0] for i in range(200)]
    assert ids == list(range(ids[0], ids[0] + 200))
    claimed: list[int] = []
    while len(claimed) < 200:
        claimed += [
            j.id for j in await backend.claim(claim_params(token=uuid.uuid4().hex, limit=7))
        ]
    assert claimed == ids
