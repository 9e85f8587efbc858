"""The cost of flow control and workflows: ``python -m bench.flow [--backends …]``.

Per backend, in one run (conveyor only: the peers that have these sell them):

- **limits**: 20,000 no-op jobs over 100 tenants drained by one in-process worker
  (concurrency 20), with no limit, with ``Limit(5, key="tenant")`` on the job, and with
  ``Rate(1,000,000, per="1s")`` (a rate far above the drain speed, so it only costs its
  bookkeeping): jobs/s and the ratio to no limit (target: within 20 %); the three take
  turns for ``--rounds`` rounds, and each reports its median speed and the median of its
  ratios to the no-limit drain of the same round;
- **workflows**: 10,000 plain no-op jobs against a 10,000-member batch (drain speed of
  members vs plain jobs), and the time from the last member's completion to the start of
  the batch's ``on_complete`` job.

Prints markdown tables. Each store is a fresh schema / key prefix / file, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import conveyor
from bench.durable import _drop, _url


def _queue(url: str, extra: dict[str, str], limit: Any = None, rate: Any = None) -> conveyor.Queue:
    queue = conveyor.Queue(url, sweep_interval=0.2, poll_interval=0.2, **extra)  # type: ignore[arg-type]

    @queue.job("noop", concurrency=limit, rate=rate)
    async def noop(payload: Any, ctx: conveyor.Context) -> None:
        return None

    return queue


async def _fill(queue: conveyor.Queue, n: int, tenants: int) -> None:
    for start in range(0, n, 1000):
        await queue.enqueue_many(
            [
                conveyor.JobSpec("noop", i, tenant=f"t{i % tenants}")
                for i in range(start, min(n, start + 1000))
            ]
        )


_CONFIGS: tuple[tuple[Any, Any], ...] = (
    (None, None),
    (conveyor.Limit(5, key="tenant"), None),
    (None, conveyor.Rate(1_000_000, per="1s")),
)


async def _drain(kind: str, tmp: Path, jobs: int, limit: Any, rate: Any) -> float:
    url, extra = _url(kind, tmp)
    queue = _queue(url, extra, limit, rate)
    try:
        await queue.migrate()
        await _fill(queue, jobs, 100)
        t = time.perf_counter()
        done = await queue.worker(concurrency=20).run_once()
        assert done == jobs, (done, jobs)
        return jobs / (time.perf_counter() - t)
    finally:
        await queue.close()
        await _drop(kind, queue)


async def _limits(kind: str, tmp: Path, jobs: int, rounds: int) -> list[str]:
    # the configurations take turns, round after round: each reports its median speed,
    # and its ratio is the median of its ratios to the no-limit drain of the same round
    # (a slow spell of the machine then lands on both sides of a ratio)
    speeds: list[list[float]] = [[] for _ in _CONFIGS]
    for _ in range(rounds):
        for i, (limit, rate) in enumerate(_CONFIGS):
            speeds[i].append(await _drain(kind, tmp, jobs, limit, rate))
    cells = []
    for s in speeds:
        ratio = statistics.median(x / base for x, base in zip(s, speeds[0], strict=True))
        cells.append(f"{statistics.median(s):,.0f} ({ratio:.2f}x)")
    return cells


async def _workflows(kind: str, tmp: Path, members: int) -> list[str]:
    url, extra = _url(kind, tmp)
    queue = conveyor.Queue(url, sweep_interval=0.2, poll_interval=0.2, **extra)  # type: ignore[arg-type]
    last_member = 0.0
    started = asyncio.Event()
    callback_at = 0.0

    @queue.job("noop")
    async def noop(payload: Any, ctx: conveyor.Context) -> None:
        nonlocal last_member
        last_member = time.perf_counter()

    @queue.job("report")
    async def report(payload: Any, ctx: conveyor.Context) -> None:
        nonlocal callback_at
        callback_at = time.perf_counter()
        started.set()

    try:
        await queue.migrate()
        await _fill(queue, members, 1)
        t = time.perf_counter()
        await queue.worker(concurrency=20).run_once()
        plain = members / (time.perf_counter() - t)
        await queue.enqueue_batch(
            [conveyor.JobSpec("noop", i) for i in range(members)],
            on_complete=conveyor.JobSpec("report"),
        )
        worker = queue.worker(concurrency=20)
        task = asyncio.create_task(worker.run())
        t = time.perf_counter()
        await asyncio.wait_for(started.wait(), 600)
        batch_speed = members / (last_member - t)
        await worker.stop()
        await task
    finally:
        await queue.close()
        await _drop(kind, queue)
    return [
        f"{plain:,.0f}",
        f"{batch_speed:,.0f} ({batch_speed / plain:.2f}x)",
        f"{(callback_at - last_member) * 1000:.1f} ms",
    ]


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres,redis")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="drains per limit configuration")
    args = parser.parse_args(argv)

    async def run() -> tuple[list[list[str]], list[list[str]]]:
        limits, flows = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for kind in args.backends.split(","):
                limits.append([kind, *await _limits(kind, Path(tmp), args.jobs, args.rounds)])
                flows.append([kind, *await _workflows(kind, Path(tmp), args.members)])
        return limits, flows

    limits, flows = asyncio.run(run())
    out(
        f"| backend | drain {args.jobs:,} jobs/s, no limit | Limit(5, key=tenant), 100 tenants | Rate(1M/s) |"
    )
    out("| --- | ---: | ---: | ---: |")
    for row in limits:
        out("| " + " | ".join(row) + " |")
    out("")
    out(
        f"| backend | {args.members:,} plain jobs/s | batch members/s | last member → callback start |"
    )
    out("| --- | ---: | ---: | ---: |")
    for row in flows:
        out("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
