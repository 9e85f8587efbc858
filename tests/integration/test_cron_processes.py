"""Three worker processes run cron at once, one is killed mid-way: every tick of an
every-second schedule is enqueued exactly once, and none is lost at the hand-over."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conveyor import JobState
from tests.conftest import Store, wait_for
from tests.integration.test_processes import FAST, ROOT, fast_queue, probe_lines


async def test_one_enqueue_per_tick_across_processes_with_one_killed(
    store: Store, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "ticks"
    env = {
        **os.environ,
        **store.env,
        **FAST,
        "PYTHONPATH": str(ROOT),
        "CONVEYOR_TEST_TICK_PROBE": str(probe),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "worker",
                "tests.integration.app:queue",
                "--include",
                "tick",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        await wait_for(lambda: len(probe_lines(probe)) >= 2, timeout=30)
        procs[0].send_signal(signal.SIGKILL)  # one process dies mid-way
        procs[0].wait(10)
        first_after_kill = time.time()
        # six distinct ticks (the killed process's last tick may run twice: at least once)
        await wait_for(lambda: len({x[1] for x in probe_lines(probe)}) >= 6, timeout=30)
        # stop the rest gracefully: no new ticks after this point
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    jobs = await q.list_jobs(name="tick", limit=1000)
    assert len(jobs) >= 6
    # One job per tick (the idempotency key names the tick): no tick twice.
    keys = [j.idempotency_key for j in jobs]
    assert len(keys) == len(set(keys)), keys
    tick_times = sorted(float(k.rsplit(":", 1)[1]) for k in keys if k)
    # Consecutive seconds: no tick lost, also across the killed process's hand-over.
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(tick_times)}
    assert gaps == {1.0}, tick_times
    assert any(t > first_after_kill - 1 for t in tick_times)
    # The handlers saw the tick they were fired for (ctx.scheduled_for).
    seen = {float(line[1]) for line in probe_lines(probe)}
    assert seen <= set(tick_times) and len(seen) >= 6
    counts = await q.counts()
    assert counts["running"] == 0
    done = [j for j in jobs if j.state is JobState.COMPLETED]
    assert len(done) >= len(jobs) - 1  # the last tick may still be queued at shutdown
