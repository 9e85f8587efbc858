"""Durable execution across real processes: a SIGKILL inside a step, a token completed by
another process, a waiting job holding no slot of a running worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import conveyor
from conveyor import JobState
from tests.conftest import Store, wait_for
from tests.integration.test_processes import (
    ROOT,
    Workers,
    assert_nothing_running,
    fast_queue,
    probe_lines,
)


async def test_a_sigkill_mid_handler_reruns_only_the_step_in_flight(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    ids = [
        await q.enqueue("durable-steps", {"probe": str(probe), "seconds": [60, 0.01]})
        for _ in range(3)
    ]
    victim = workers.start(concurrency=3)
    await wait_for(lambda: len([x for x in probe_lines(probe) if x[0] == "two"]) == 3, timeout=30)
    victim.kill()
    victim.wait(10)
    workers.start(concurrency=3)

    async def all_done() -> bool:
        jobs = [await q.get_job(i) for i in ids]
        return all(j is not None and j.state is JobState.COMPLETED for j in jobs)

    await wait_for(all_done, timeout=30)
    lines = probe_lines(probe)
    for job_id in ids:
        runs = [(x[0], x[2]) for x in lines if int(x[1]) == job_id]
        assert runs == [("one", "1"), ("two", "1"), ("two", "2")]  # step one never twice
        job = await q.get_job(job_id)
        assert job is not None and job.result == {"sum": 3, "attempt": 2}
        assert [s["name"] for s in job.steps] == ["one", "two"]
    await assert_nothing_running(q)
    await q.close()


async def test_a_token_completed_by_another_process_resumes_the_job(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    waiting = await q.enqueue("await-approval", {"probe": str(probe), "timeout": "1h"})
    workers.start(concurrency=1)
    await wait_for(lambda: any(x[0] == "token" for x in probe_lines(probe)), timeout=30)

    async def is_waiting() -> bool:
        job = await q.get_job(waiting)
        return job is not None and job.state is JobState.WAITING

    await wait_for(is_waiting, timeout=30)
    # The waiting job holds no slot: the concurrency-1 worker runs other jobs meanwhile.
    other = await q.enqueue("count", {"probe": str(tmp_path / "count"), "n": 5})
    assert (await wait_for_state(q, other, JobState.COMPLETED)).result == 5

    [token_id] = [x[2] for x in probe_lines(probe) if x[0] == "token"]
    code = (
        "import json, sys; from tests.integration.app import complete_token_from_process as c; "
        "print(json.dumps([c(sys.argv[1], {'amount': 5}), c(sys.argv[1], 'again')]))"
    )
    env = {**os.environ, **store.env, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, token_id], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout) == [True, False]
    job = await wait_for_state(q, waiting, JobState.COMPLETED)
    assert job.result == {"ok": True, "data": {"amount": 5}}
    assert [x[0] for x in probe_lines(probe)] == ["token"]  # asked once
    await assert_nothing_running(q)
    await q.close()


async def wait_for_state(q: conveyor.Queue, job_id: int, state: JobState) -> conveyor.Job:
    async def check() -> conveyor.Job | None:
        job = await q.get_job(job_id)
        return job if job is not None and job.state is state else None

    started = time.monotonic()
    job = await wait_for(check, timeout=30)
    assert time.monotonic() - started < 30
    return job
