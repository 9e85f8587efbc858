"""conveyor on SQLite alone, in one process: ``python -m bench.sqlite_quick``.

The first benchmark of the foundation issue: enqueue one by one and in bulk, drain
10,000 no-op jobs at a few concurrency levels, and enqueue→start latency p50/p99 with a
running worker. Prints one markdown table. The side-by-side comparison with every peer
is ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import conveyor


async def _queue(path: Path) -> conveyor.Queue:
    q = conveyor.Queue(f"sqlite:///{path}")

    @q.job("noop")
    async def noop(payload: object, ctx: conveyor.Context) -> None:
        return None

    await q.migrate()
    return q


async def run(jobs: int, levels: list[int]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        q = await _queue(Path(tmp) / "enqueue.db")
        n = min(jobs, 5000)
        t = time.perf_counter()
        for i in range(n):
            await q.enqueue("noop", {"n": i})
        rows.append(("enqueue one by one", f"{n / (time.perf_counter() - t):,.0f} jobs/s"))
        t = time.perf_counter()
        for start in range(0, jobs, 1000):
            await q.enqueue_many(
                [conveyor.JobSpec("noop", {"n": i}) for i in range(start, start + 1000)]
            )
        rows.append(
            ("enqueue_many (1,000 per call)", f"{jobs / (time.perf_counter() - t):,.0f} jobs/s")
        )
        await q.close()
        for level in levels:
            q = await _queue(Path(tmp) / f"drain{level}.db")
            await q.enqueue_many([conveyor.JobSpec("noop", {"n": i}) for i in range(jobs)])
            t = time.perf_counter()
            done = await q.worker(concurrency=level).run_once()
            rate = done / (time.perf_counter() - t)
            rows.append((f"drain {jobs:,} no-op jobs, concurrency {level}", f"{rate:,.0f} jobs/s"))
            await q.close()
        q = await _queue(Path(tmp) / "latency.db")
        latencies: list[float] = []
        sent: dict[int, float] = {}
        all_started = asyncio.Event()

        @q.job("probe")
        async def probe(payload: int, ctx: conveyor.Context) -> None:
            latencies.append(time.perf_counter() - sent[payload])
            if len(latencies) == 300:
                all_started.set()

        worker = q.worker(concurrency=10)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        for i in range(300):
            sent[i] = time.perf_counter()
            await q.enqueue("probe", i)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(all_started.wait(), 60)
        await worker.stop()
        await task
        await q.close()
        ms = sorted(x * 1000 for x in latencies)
        p99 = ms[int(len(ms) * 0.99) - 1]
        rows.append(
            (
                "enqueue→start p50 / p99 (300 jobs at 50/s)",
                f"{statistics.median(ms):.2f} / {p99:.2f} ms",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--levels", default="1,10,50", help="worker concurrency levels")
    args = parser.parse_args()
    rows = asyncio.run(run(args.jobs, [int(x) for x in args.levels.split(",")]))
    print("| conveyor on SQLite (one process) | result |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
