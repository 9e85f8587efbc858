"""Many processes on one store: enqueuers and workers at once, every job exactly once,
and no store error (no "database is locked" on SQLite) ever reaches a user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Store, wait_for
from tests.integration.test_processes import FAST, ROOT, Workers, fast_queue, probe_lines

ENQUEUERS, PER_PROCESS = 3, 150


async def test_enqueuers_and_workers_in_parallel_processes(store: Store, tmp_path: Path) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "probe"
    workers = Workers(store, tmp_path)
    try:
        workers.start(concurrency=8)
        workers.start(concurrency=8)
        env = {**os.environ, **store.env, **FAST, "PYTHONPATH": str(ROOT)}
        code = (
            "import sys; from tests.integration.app import enqueue_many_from_process as f; "
            "f(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
        )
        enqueuers = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(probe), str(i * PER_PROCESS), str(PER_PROCESS)],
                env=env,
                cwd=ROOT,
                stderr=subprocess.PIPE,
            )
            for i in range(ENQUEUERS)
        ]
        for p in enqueuers:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
        total = ENQUEUERS * PER_PROCESS
        await wait_for(lambda: len(probe_lines(probe)) >= total, timeout=120)

        async def settled() -> bool:
            counts = await q.counts()
            return counts["completed"] == total

        await wait_for(settled, timeout=60)
    finally:
        workers.stop_all()
    runs = [line for line in probe_lines(probe) if line[0] == "run"]
    ids = [int(r[1]) for r in runs]
    assert len(ids) == total and len(set(ids)) == total  # each job ran exactly once
    assert {r[3] for r in runs} == {str(p.pid) for p in workers.procs}  # both workers worked
    counts = await q.counts()
    assert counts["completed"] == total and counts["failed"] == 0 and counts["running"] == 0
    for i in range(len(workers.procs)):
        log = workers.log(i).lower()
        assert "locked" not in log and "error" not in log, log[-2000:]
