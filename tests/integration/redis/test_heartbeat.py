"""A heartbeat never reports as lost a job whose own outcome was just written.

A worker keeps a job until its outcome is written and beats every job it keeps, so a
heartbeat can carry a job whose outcome is in flight on another connection. When Redis
runs the outcome first, ``heartbeat.lua`` finds the job finished; that must not come back
as "lost" (which the core reads as "rescued elsewhere" and warns about). A rescue's
outcome, though, is a loss."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

import conveyor
from conveyor.backends.base import HeartbeatParams, HeartbeatResult, Outcome
from conveyor.backends.redis.backend import RedisBackend
from conveyor.models import JobState
from tests.conformance._util import running, wait_state
from tests.integration.redis.helpers import NOW, Raw, claim_params, enqueue, new_job, wait_until

LEASE = 30.0


class Gate:
    """Holds the replies of chosen scripts on the client side: Redis ran the script, its
    reply is on its way, and this process has not read it yet."""

    def __init__(self, backend: RedisBackend) -> None:
        lane: Any = backend._lane
        self._real: Callable[[str, Sequence[str]], Awaitable[Any]] = lane.script
        self.held: dict[str, asyncio.Event] = {}
        self.replied: dict[str, asyncio.Event] = {}
        lane.script = self._script

    def hold(self, name: str) -> asyncio.Event:
        self.held[name] = asyncio.Event()
        return self.held[name]

    def replied_to(self, name: str) -> asyncio.Event:
        return self.replied.setdefault(name, asyncio.Event())

    async def _script(self, name: str, args: Sequence[str]) -> Any:
        reply = await self._real(name, args)
        self.replied_to(name).set()
        gate = self.held.get(name)
        if gate is not None:
            await gate.wait()
        return reply


def beat(job_id: int, token: str) -> HeartbeatParams:
    return HeartbeatParams([(job_id, token)], NOW + 1, NOW + 1 + LEASE)


async def _claimed(backend: RedisBackend) -> int:
    [job_id] = await enqueue(backend, new_job())
    [job] = await backend.claim(claim_params(token="tok"))
    assert job.id == job_id
    return job_id


def _outcome(job_id: int, **kw: Any) -> Outcome:
    return Outcome(job_id, "tok", JobState.COMPLETED, NOW + 1, "completed", **kw)


async def _write(backend: RedisBackend, how: str, job_id: int) -> list[bool]:
    if how == "complete_many":
        return await backend.complete_many([_outcome(job_id)])
    applied, _ = await backend.complete_and_claim([_outcome(job_id)], claim_params(token="next"))
    return applied


@pytest.mark.parametrize("how", ["complete_many", "complete_and_claim"])
async def test_a_job_whose_outcome_is_in_flight_is_not_lost(
    backend: RedisBackend, raw: Raw, how: str
) -> None:
    """Redis runs the outcome, then the heartbeat; the heartbeat's reply is read first."""
    job_id = await _claimed(backend)
    gate = Gate(backend)
    release = gate.hold("complete" if how == "complete_many" else "complete_claim")
    writing = asyncio.ensure_future(_write(backend, how, job_id))
    await wait_until(lambda: raw.state(job_id) == "completed")  # Redis ran it
    beating = asyncio.ensure_future(backend.heartbeat(beat(job_id, "tok")))
    await gate.replied_to("heartbeat").wait()  # Redis ran the heartbeat after it
    release.set()
    result: HeartbeatResult = await asyncio.wait_for(beating, 5)
    assert result.lost == frozenset()
    assert await writing == [True]


async def test_an_outcome_written_while_the_heartbeat_is_in_flight_is_not_lost(
    backend: RedisBackend, raw: Raw
) -> None:
    """Redis runs the outcome, then the heartbeat; the outcome's reply is read first."""
    job_id = await _claimed(backend)
    gate = Gate(backend)
    release_write = gate.hold("complete")
    release_beat = gate.hold("heartbeat")
    writing = asyncio.ensure_future(backend.complete_many([_outcome(job_id)]))
    await wait_until(lambda: raw.state(job_id) == "completed")
    beating = asyncio.ensure_future(backend.heartbeat(beat(job_id, "tok")))
    await gate.replied_to("heartbeat").wait()
    release_write.set()
    assert await writing == [True]
    release_beat.set()
    assert (await asyncio.wait_for(beating, 5)).lost == frozenset()


async def test_a_job_still_running_is_renewed_not_waited_for(
    backend: RedisBackend, raw: Raw
) -> None:
    """An outcome in flight that Redis has not run yet: the heartbeat renews the lease."""
    job_id = await _claimed(backend)
    result = await backend.heartbeat(beat(job_id, "tok"))
    assert result.lost == frozenset()
    assert float(raw.job(job_id)["lease_expires_at"]) == NOW + 1 + LEASE


@pytest.mark.parametrize("by", ["a rescue in flight", "a rescue", "another token"])
async def test_a_job_rescued_under_its_worker_is_lost(
    backend: RedisBackend, raw: Raw, by: str
) -> None:
    job_id = await _claimed(backend)
    rescue = Outcome(
        job_id,
        "tok",
        JobState.QUEUED,
        NOW + 40,
        "stalled",
        run_at=NOW + 40,
        expired_before=NOW + 40,
    )
    if by == "a rescue in flight":  # written by this process's maintenance, say
        gate = Gate(backend)
        release = gate.hold("complete")
        writing = asyncio.ensure_future(backend.complete_many([rescue]))
        await wait_until(lambda: raw.state(job_id) == "queued")
        beating = asyncio.ensure_future(backend.heartbeat(beat(job_id, "tok")))
        await gate.replied_to("heartbeat").wait()
        release.set()
        assert (await asyncio.wait_for(beating, 5)).lost == {job_id}
        assert await writing == [True]
    elif by == "a rescue":
        assert await backend.complete_many([rescue]) == [True]
        assert (await backend.heartbeat(beat(job_id, "tok"))).lost == {job_id}
    else:  # an outcome of this job under another token is not its worker's own
        assert await backend.complete_many([_outcome(job_id)]) == [True]
        assert (await backend.heartbeat(beat(job_id, "other"))).lost == {job_id}


async def test_a_worker_never_warns_that_a_completed_job_was_lost(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the public API: every outcome's reply is held until a heartbeat carrying
    the job has run after it, so each heartbeat finds its jobs already completed."""
    q = conveyor.Queue(redis_url, prefix=prefix, lease=3, heartbeat_interval=0.1, poll_interval=0.5)
    ran: list[int] = []

    @q.job("quick")
    async def quick(payload: int, ctx: conveyor.Context) -> None:
        ran.append(payload)

    try:
        await q.migrate()
        backend: RedisBackend = await q.engine.backend()  # type: ignore[assignment]
        lane: Any = backend._lane
        real = lane.script
        beats = finished = 0

        async def script(name: str, args: Sequence[str]) -> Any:
            nonlocal beats, finished
            reply = await real(name, args)
            if name == "heartbeat":
                beats += 1
                finished += len(reply[0])  # jobs it found no longer running
            elif name in ("complete", "complete_claim"):
                seen = beats
                await wait_until(lambda: beats >= seen + 1, timeout=5, interval=0.01)
            return reply

        lane.script = script
        with caplog.at_level(logging.WARNING, logger="conveyor"):
            async with running(q.worker(concurrency=2)):
                ids = [await q.enqueue("quick", n) for n in range(3)]
                for job_id in ids:
                    await wait_state(q, job_id, JobState.COMPLETED)
        assert sorted(ran) == [0, 1, 2]
        assert finished >= 1  # the race really happened
        assert "lease lost" not in caplog.text
        assert "not recorded" not in caplog.text
    finally:
        await q.close()
