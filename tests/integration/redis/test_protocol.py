"""RESP2 and RESP3: every reply conveyor decodes itself is decoded right in both shapes,
against real replies from a real server connection opened with that protocol, and every
connection conveyor makes speaks RESP2 (pinned), whatever redis-py's default or the URL
says. (redis-py 8 asks for RESP3 by default; then ``ZPOPMIN key n`` replies with
``[member, score]`` pairs instead of a flat list, and a hand-off decoded as a flat list
lost jobs.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection, Connection, parse_url

from conveyor.backends.base import ClaimParams, EventRead
from conveyor.backends.redis import codec, handoff
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.handoff import HandOff
from conveyor.backends.redis.stream import EventStream
from conveyor.backends.redis.wakeup import BlockingConnection, Waker
from tests.integration.redis.helpers import NOW, OwnRedis, Raw, enqueue, new_job, wait_until

PROTOCOLS = pytest.mark.parametrize("protocol", [2, 3])


def factory(url: str, protocol: int) -> Callable[[], AbstractConnection]:
    """New connections to ``url`` that speak ``protocol``."""
    options = parse_url(url)

    def make() -> AbstractConnection:
        return Connection(**options, protocol=protocol, decode_responses=True)

    return make


def standing(token: str, limit: int = 10) -> ClaimParams:
    return ClaimParams(worker_id="w1", token=token, limit=limit, now=NOW, lease_expires_at=NOW + 30)


async def hand_over_unpopped(backend: RedisBackend, raw: Raw, hand: HandOff, n: int) -> list[int]:
    """``n`` real hand-off members left in ``hand``'s key, none popped (one job each,
    tokens t0, t1, …, in that order in the key)."""
    ids = []
    for k in range(n):
        raw.client.hset(raw.keys.waiters, hand.id, codec.registration(standing(f"t{k}"), NOW + 30))
        ids += await enqueue(backend, new_job(f"job{k}"))
    assert raw.client.zcard(raw.keys.hand(hand.id)) == n
    return ids


@PROTOCOLS
async def test_the_hand_off_replies_decode_in_both_protocols(
    backend: RedisBackend, raw: Raw, redis_url: str, protocol: int
) -> None:
    """The wait's packed commands on a real connection of that protocol: the pop takes
    the first member, the release's ``ZPOPMIN key n`` the two others (pairs in RESP3)."""
    hand: Any = backend._waker._hand  # type: ignore[union-attr]
    ids = await hand_over_unpopped(backend, raw, hand, 3)
    conn = BlockingConnection(factory(redis_url, protocol))
    try:
        command = hand.commands(standing("new"), 1.0, [raw.keys.marker], "1.000")
        replies = await conn.call_packed(command, handoff.REPLIES, wait=1.0)
    finally:
        await conn.close()
    taken = replies[3]
    assert len(taken) == (2 if protocol == 3 else 4)  # the shapes really differ
    jobs = hand.settle(replies)
    assert [(j.id, j.token) for j in jobs] == [(ids[0], "t0"), (ids[1], "t1"), (ids[2], "t2")]
    assert not hand.pending
    assert not raw.client.exists(raw.keys.hand(hand.id))
    assert not raw.registered(backend)


@PROTOCOLS
async def test_zset_replies_decode_in_both_protocols(
    redis_url: str, raw: Raw, protocol: int
) -> None:
    key = raw.keys.hand("decode")
    raw.client.zadd(key, {"a": 1, "b": 2, "c": 3})
    conn = BlockingConnection(factory(redis_url, protocol))
    try:
        ranged = await conn.call("ZRANGE", key, 0, -1, "WITHSCORES", wait=0)
        popped = await conn.call("ZPOPMIN", key, 2, wait=0)
        one = await conn.call("ZPOPMIN", key, 100, wait=0)
        none = await conn.call("ZPOPMIN", key, 100, wait=0)
    finally:
        await conn.close()
    assert codec.zset_members(ranged) == ["a", "b", "c"]
    assert codec.zset_members(popped) == ["a", "b"]
    assert codec.zset_members(one) == ["c"]
    assert codec.zset_members(none) == []


@PROTOCOLS
async def test_a_wait_hands_over_in_both_protocols(
    make_backend: Any, raw: Raw, redis_url: str, protocol: int
) -> None:
    """A whole wait (register, blocking pop, release) on a wake-up connection of that
    protocol; then the same with a hand-off that raced the end of the wait."""
    backend: RedisBackend = await make_backend()
    conns = backend._conns
    assert conns is not None
    hand = HandOff(conns.lane, backend._keys)
    waker = Waker(factory(redis_url, protocol), conns.unblock, 0.2, hand)
    waker.bind(asyncio.get_running_loop())
    try:
        waiting = asyncio.ensure_future(waker.wait([raw.keys.marker], 30, standing("s")))
        await wait_until(lambda: raw.client.hexists(raw.keys.waiters, hand.id))
        [job_id] = await enqueue(backend, new_job())
        [job] = await asyncio.wait_for(waiting, 5)
        assert (job.id, job.token) == (job_id, "s")
        # two members left over (say, replies lost): the next wait's release takes both
        ids = await hand_over_unpopped(backend, raw, hand, 2)
        hand.pending = True
        got = await asyncio.wait_for(waker.wait([raw.keys.marker], 30, standing("s2")), 5)
        assert sorted(j.id for j in got) == ids
    finally:
        await waker.close()


@PROTOCOLS
async def test_event_stream_replies_decode_in_both_protocols(
    backend: RedisBackend, raw: Raw, redis_url: str, protocol: int
) -> None:
    ids = await enqueue(backend, new_job("a"), new_job("b"))
    stream = EventStream(raw.keys.stream, factory(redis_url, protocol))
    try:
        events, cursor = await stream.read("0-0", 10, 0)  # XREAD
        assert [(e.type, e.job_id) for e in events] == [("enqueued", i) for i in ids]
        head, partial = await stream.read("0-0", 1, 0)  # cut short: "<entry>/1"
        assert partial.endswith("/1")
        rest, _ = await stream.read(partial, 10, 0)  # XRANGE of the entry, then XREAD
        assert [e.job_id for e in head + rest] == ids
        assert (await stream.read(None, 10, 0))[1] == cursor  # XREVRANGE: the end
        more = await enqueue(backend, new_job("c"))
        events, _ = await stream.read(cursor, 10, 5)  # XREAD BLOCK
        assert [e.job_id for e in events] == more
    finally:
        await stream.close()


# -- conveyor's own connections ----------------------------------------------------------------


def _protocols(server: OwnRedis) -> list[str]:
    """The RESP version of every client of the private server but this one."""
    with server.client() as c:
        me = c.client_id()
        return [str(client.get("resp")) for client in c.client_list() if int(client["id"]) != me]


@pytest.mark.parametrize("query", ["", "?protocol=3", "?protocol=3&health_check_interval=0"])
async def test_every_connection_speaks_resp2(
    make_backend: Any, own_redis: OwnRedis, query: str
) -> None:
    backend: RedisBackend = await make_backend(own_redis.url + query)
    [job_id] = await enqueue(backend, new_job())  # the lane
    assert await backend.get_job(job_id) is not None  # the redis-py pool
    await backend.counts(None)  # a pipeline
    await backend.wait_for_work(0.01)  # takes the enqueue's wake-up marker
    waiting = asyncio.ensure_future(backend.wait_for_work(30, standing("s")))  # wake-up
    cursor = (await backend.read_events(_read(None, 0))).cursor
    reading = asyncio.ensure_future(backend.read_events(_read(cursor, 30)))  # the stream
    try:
        await wait_until(lambda: len(_protocols(own_redis)) >= 4)
        await wait_until(lambda: _blocked_clients(own_redis) >= 2)
        assert set(_protocols(own_redis)) == {"2"}
    finally:
        backend.wake()
        await asyncio.wait_for(waiting, 5)
        await enqueue(backend, new_job())
        await asyncio.wait_for(reading, 5)


def _read(after: str | None, timeout: float) -> EventRead:
    return EventRead(after, 10, timeout)


def _blocked_clients(server: OwnRedis) -> int:
    with server.client() as c:
        return int(c.info("clients")["blocked_clients"])
