"""A real worker process killed (SIGKILL) while its standing claim is registered: the
enqueue that hands jobs to the dead worker stores them as running with a lease, so the
rescue runs them elsewhere; nothing is lost, nothing stays running, nothing runs twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

import conveyor
from conveyor import JobState
from conveyor.backends.redis.keys import Keys
from tests.conftest import REDIS_URL, Store, require_backend, wait_for
from tests.integration.test_processes import Workers, probe_lines

pytestmark = pytest.mark.slow


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    require_backend("redis")
    s = Store("redis", tmp_path)
    yield s
    await s.cleanup()


def _registrations(store: Store) -> dict[str, dict[str, object]]:
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        raw = client.hgetall(Keys(store.token).waiters)
    return {waiter: json.loads(reg) for waiter, reg in raw.items()}


async def test_a_worker_killed_while_registered_loses_nothing(store: Store, tmp_path: Path) -> None:
    q = store.queue(lease=1.5, heartbeat_interval=0.3, sweep_interval=0.2, poll_interval=0.2)
    await q.migrate()
    workers = Workers(store, tmp_path)
    try:
        # the victim waits 30 s at a time, and its standing claim stands for half its
        # lease (2 s), so it outlives the victim for a while
        victim = workers.start(
            concurrency=3, env={"CONVEYOR_POLL_INTERVAL": "30", "CONVEYOR_LEASE": "4"}
        )
        await wait_for(lambda: len(_registrations(store)) == 1, timeout=30)
        [registration] = _registrations(store).values()
        assert registration["n"] == 3 and str(victim.pid) in str(registration["w"])
        victim.kill()  # SIGKILL: no release, no goodbye
        victim.wait(10)

        probe = tmp_path / "probe"
        first = await q.enqueue_many(
            [conveyor.JobSpec("count", {"probe": str(probe), "n": n}, attempts=3) for n in range(2)]
        )
        # handed to the dead worker: running under its claim, its registration used up
        for job_id in first:
            job = await q.get_job(job_id)
            assert job is not None and job.state is JobState.RUNNING and job.attempts == 1
        assert _registrations(store) == {}
        later = [
            await q.enqueue("count", {"probe": str(probe), "n": n}, attempts=3) for n in range(2, 4)
        ]
        for job_id in later:  # nobody stands any more: simply queued
            job = await q.get_job(job_id)
            assert job is not None and job.state is JobState.QUEUED

        workers.start(concurrency=3)  # rescues the dead worker's jobs, runs the rest

        async def all_done() -> bool:
            jobs = [await q.get_job(i) for i in first + later]
            return all(j is not None and j.state is JobState.COMPLETED for j in jobs)

        await wait_for(all_done, timeout=30)
        runs = [line for line in probe_lines(probe) if line[0] == "run"]
        assert sorted(int(r[1]) for r in runs) == sorted(first + later)  # each ran once
        for job_id in first:  # the attempt handed to the dead worker counts, as a crash's
            job = await q.get_job(job_id)
            assert job is not None and job.attempts == 2
            assert "stalled" in [e.type for e in await q.get_job_events(job_id)]
        for job_id in later:
            job = await q.get_job(job_id)
            assert job is not None and job.attempts == 1
        assert (await q.counts())["running"] == 0
    finally:
        workers.stop_all()
