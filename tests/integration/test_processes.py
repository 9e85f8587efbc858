"""Real worker processes: SIGKILL mid-job, SIGSTOP past the lease, SIGTERM drains.

Every test runs on every backend (the ``store`` fixture) with short leases, and ends by
checking that no job is lost and none is left ``running``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import conveyor
from conveyor import JobState
from tests.conftest import Store, wait_for

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "CONVEYOR_LEASE": "1.5",
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.3",
    "CONVEYOR_SWEEP_INTERVAL": "0.2",
    "CONVEYOR_POLL_INTERVAL": "0.2",
}


class Workers:
    def __init__(self, store: Store, tmp_path: Path):
        self.store = store
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str, concurrency: int = 5, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.store.env, **FAST, **(env or {}), "PYTHONPATH": str(ROOT)}
        with open(self.tmp_path / f"worker{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "conveyor",
                    "worker",
                    "tests.integration.app:queue",
                    "--concurrency",
                    str(concurrency),
                    "-v",
                    *args,
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.tmp_path / f"worker{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
            p.wait(10)


def probe_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


async def fast_queue(store: Store) -> conveyor.Queue:
    q = store.queue(lease=1.5, heartbeat_interval=0.3, sweep_interval=0.2, poll_interval=0.2)
    await q.migrate()
    return q


async def assert_nothing_running(q: conveyor.Queue) -> None:
    counts = await q.counts()
    assert counts["running"] == 0, counts


async def test_sigkill_mid_job_every_job_finishes_exactly_once_more(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    """A ``kill -9`` during a deploy: the dead worker's jobs run once more, elsewhere, and
    the stall uses up no attempt, so an ``attempts=1`` job completes instead of failing."""
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    ids = [
        await q.enqueue("slow", {"probe": str(probe), "seconds": [30, 0.1]}, attempts=1)
        for _ in range(4)
    ]
    victim = workers.start(concurrency=4)
    await wait_for(lambda: len([x for x in probe_lines(probe) if x[0] == "start"]) == 4, timeout=30)
    victim.kill()  # SIGKILL: no drain, no goodbye
    victim.wait(10)
    workers.start(concurrency=4)

    async def all_done() -> bool:
        jobs = [await q.get_job(i) for i in ids]
        return all(j is not None and j.state is JobState.COMPLETED for j in jobs)

    await wait_for(all_done, timeout=30)
    lines = probe_lines(probe)
    for job_id in ids:
        starts = [x for x in lines if x[0] == "start" and int(x[1]) == job_id]
        ends = [x for x in lines if x[0] == "end" and int(x[1]) == job_id]
        assert [s[2] for s in starts] == ["1", "2"]  # ran once more: run 2 of 2 started
        assert len(ends) == 1 and ends[0][2] == "2"
        job = await q.get_job(job_id)
        assert job is not None and job.result["attempt"] == 2
        assert (job.attempts, job.stalls, job.max_attempts) == (2, 1, 1)  # a stall, no attempt
        assert [e["type"] for e in job.errors] == ["LeaseExpired"]
        assert "stalled" in [e.type for e in await q.get_job_events(job_id)]
    await assert_nothing_running(q)


async def test_sigstop_past_lease_stale_write_rejected(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    """A worker paused past its lease comes back: its outcome and its log lines are
    refused; the rescued run's stand."""
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    job_id = await q.enqueue("slow", {"probe": str(probe), "seconds": [2.5, 0.1]}, attempts=3)
    frozen = workers.start(concurrency=1)
    await wait_for(lambda: any(x[0] == "start" for x in probe_lines(probe)), timeout=30)
    os.kill(frozen.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    rescuer = workers.start(concurrency=1)

    async def completed_by_rescuer() -> bool:
        job = await q.get_job(job_id)
        return job is not None and job.state is JobState.COMPLETED

    await wait_for(completed_by_rescuer, timeout=30)
    job = await q.get_job(job_id)
    assert job is not None and job.result["pid"] == rescuer.pid and job.attempts == 2
    # Wake the frozen worker once its handler's time is up (2.5 s from its start, which
    # came before the pause): the handler ends at once and its worker tries to record
    # attempt 1, its log lines first (heartbeat or not, it has not noticed the rescue).
    await asyncio.sleep(max(0.0, stopped_at + 2.8 - time.monotonic()))
    os.kill(frozen.pid, signal.SIGCONT)
    await wait_for(
        lambda: "lease lost" in workers.log(0) or "was not recorded" in workers.log(0), timeout=30
    )
    await wait_for(
        lambda: (
            any(x[0] == "end" and x[2] == "1" for x in probe_lines(probe))
            or "lease lost" in workers.log(0)
        ),
        timeout=10,
    )

    def stale_write_done() -> bool:
        """The stale attempt's write (its log lines, then its outcome) was refused, or
        its handler was stopped before it ended (then it writes nothing at all)."""
        ended = any(x[0] == "end" and x[2] == "1" for x in probe_lines(probe))
        log = workers.log(0)
        return "was not recorded" in log or ("lease lost" in log and not ended)

    await wait_for(stale_write_done, timeout=10)
    job = await q.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result == {"pid": rescuer.pid, "attempt": 2}  # the rescued run's outcome stands
    assert job.attempts == 2
    # ... and so do its log lines alone: the stale attempt's are not stored either
    logs = [(r.attempt, r.message) for r in await q.get_job_logs(job_id)]
    assert logs == [(2, f"start 2 {rescuer.pid}"), (2, f"end 2 {rescuer.pid}")]
    await assert_nothing_running(q)


async def test_sigterm_drains_and_requeues_without_spending_an_attempt(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    short = [
        await q.enqueue("slow", {"probe": str(probe), "seconds": [0.8]}, attempts=3)
        for _ in range(2)
    ]
    long = await q.enqueue("sync-slow", {"probe": str(probe), "seconds": [60]}, attempts=3)
    proc = workers.start("--drain-timeout", "2", concurrency=3)
    await wait_for(lambda: len([x for x in probe_lines(probe) if x[0] == "start"]) == 3, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for job_id in short:
        job = await q.get_job(job_id)
        assert job is not None and job.state is JobState.COMPLETED
    job = await q.get_job(long)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 0  # the drained attempt was given back
    assert "retrying" in [e.type for e in await q.get_job_events(long)]
    await assert_nothing_running(q)


async def test_second_sigterm_stops_at_once_and_the_job_is_rescued(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    job_id = await q.enqueue("slow", {"probe": str(probe), "seconds": [60, 0.1]}, attempts=3)
    proc = workers.start("--drain-timeout", "60", concurrency=1)
    await wait_for(lambda: any(x[0] == "start" for x in probe_lines(probe)), timeout=30)
    proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: "draining" in workers.log(0), timeout=10)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    job = await q.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING  # abandoned, lease still held
    workers.start(concurrency=1)

    async def done() -> bool:
        j = await q.get_job(job_id)
        return j is not None and j.state is JobState.COMPLETED

    await wait_for(done, timeout=30)
    job = await q.get_job(job_id)
    assert job is not None and (job.attempts, job.stalls) == (2, 1)
    await assert_nothing_running(q)
