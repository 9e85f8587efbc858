"""Durable waits at scale: ``python -m bench.durable [--backends sqlite,postgres,redis]``.

Per backend, in one run (conveyor only: no peer has durable waits to compare with):

- **drain**: 20,000 due no-op jobs drained by one in-process worker (concurrency 10)
  beside 100,000 waiting jobs (half in ``ctx.sleep``, half waiting on a token), against
  the same drain after 100,000 jobs that completed instead of waiting (the same churn
  of claims and writes before it): the ratio says what waiting jobs cost the claim of
  due ones (target: 1.0 within noise);
- **resume latency**: a worker waits on 200 tokens; each ``complete_token`` is timed to
  the moment the handler runs past its ``wait_for_token`` (p50/p99), beside the
  enqueue→start latency of 200 probe jobs in the same run (scenario C's measure).

Prints one markdown table. Each store is a fresh schema / key prefix / file, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import conveyor
from bench.config import pg_url, redis_url

SAMPLES = 200


def _url(kind: str, tmp: Path) -> tuple[str, dict[str, str]]:
    token = "bench_durable_" + uuid.uuid4().hex[:8]
    if kind == "sqlite":
        return f"sqlite:///{tmp / (token + '.db')}", {}
    if kind == "postgres":
        return pg_url("test"), {"schema": token}
    return redis_url(0), {"prefix": token}


async def _drop(kind: str, queue: conveyor.Queue) -> None:
    settings = queue.settings
    if kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(settings.url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.schema}" CASCADE')
    elif kind == "redis":
        import redis.asyncio as redis

        from conveyor.backends.redis.keys import scan_pattern

        client = redis.Redis.from_url(settings.url)
        async for key in client.scan_iter(match=scan_pattern(settings.prefix), count=10_000):
            await client.delete(key)
        await client.aclose()


def _build(url: str, extra: dict[str, str]) -> conveyor.Queue:
    queue = conveyor.Queue(url, sweep_interval=0.2, poll_interval=0.2, **extra)  # type: ignore[arg-type]

    @queue.job("noop")
    async def noop(payload: Any, ctx: conveyor.Context) -> None:
        return None

    @queue.job("sleeper")
    async def sleeper(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.sleep("30d")

    @queue.job("approver")
    async def approver(payload: Any, ctx: conveyor.Context) -> None:
        token = await ctx.create_token(timeout="30d")
        await ctx.wait_for_token(token)

    return queue


async def _drain(queue: conveyor.Queue, n: int) -> float:
    for start in range(0, n, 1000):
        await queue.enqueue_many(
            [conveyor.JobSpec("noop", i) for i in range(start, min(n, start + 1000))]
        )
    t = time.perf_counter()
    done = await queue.worker(concurrency=10, include=["noop"]).run_once()
    assert done == n, (done, n)
    return n / (time.perf_counter() - t)


async def _park(queue: conveyor.Queue, n: int, *, wait: bool = True) -> None:
    """``n`` jobs in ``waiting`` (half sleeping, half on a token); with ``wait=False``,
    ``n`` jobs that run through the same claims and complete instead, so both sides of
    the comparison leave the store the same churn (dead index entries, autovacuum debt)
    and the ratio measures what waiting jobs cost, not what churn costs."""
    if not wait:
        for start in range(0, n, 1000):
            batch = [conveyor.JobSpec("noop", i) for i in range(start, min(n, start + 1000))]
            await queue.enqueue_many(batch)
        await queue.worker(concurrency=50, include=["noop"]).run_once()
        return
    for name, count in (("sleeper", n // 2), ("approver", n - n // 2)):
        for start in range(0, count, 1000):
            await queue.enqueue_many(
                [conveyor.JobSpec(name, i) for i in range(start, min(count, start + 1000))]
            )
    await queue.worker(concurrency=50, include=["sleeper", "approver"]).run_once()
    waiting = (await queue.counts())["waiting"]
    assert waiting == n, (waiting, n)


def _pct(samples: list[float]) -> str:
    ms = sorted(x * 1000 for x in samples)
    return f"{statistics.median(ms):.2f} / {ms[max(0, int(len(ms) * 0.99) - 1)]:.2f} ms"


async def _latencies(queue: conveyor.Queue) -> tuple[str, str]:
    resumed: dict[int, float] = {}
    started: dict[int, float] = {}
    tokens: dict[int, str] = {}
    parked: dict[int, asyncio.Event] = {}
    ready: dict[int, asyncio.Event] = {}

    @queue.job("waits")
    async def waits(payload: int, ctx: conveyor.Context) -> None:
        token = await ctx.create_token(timeout="1h")
        tokens[payload] = token.id
        parked.setdefault(payload, asyncio.Event())
        await ctx.wait_for_token(token)
        resumed[payload] = time.perf_counter()
        ready[payload].set()

    @queue.job("probe")
    async def probe(payload: int, ctx: conveyor.Context) -> None:
        started[payload] = time.perf_counter()
        ready[payload].set()

    def on_waiting(event: conveyor.Event) -> None:
        for key, job_id in ids.items():
            if job_id == event.job_id:
                parked.setdefault(key, asyncio.Event()).set()

    ids: dict[int, int] = {}
    queue.on("waiting", on_waiting)
    worker = queue.worker(concurrency=10)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)
    token_lat: list[float] = []
    enqueue_lat: list[float] = []
    for i in range(SAMPLES):
        ready[i] = asyncio.Event()
        parked.setdefault(i, asyncio.Event())
        ids[i] = await queue.enqueue("waits", i)
        await asyncio.wait_for(parked[i].wait(), 30)
        await asyncio.sleep(0.01)  # let the suspend be written
        t = time.perf_counter()
        assert await queue.complete_token(tokens[i], True)
        await asyncio.wait_for(ready[i].wait(), 30)
        token_lat.append(resumed[i] - t)
    for i in range(SAMPLES, 2 * SAMPLES):
        ready[i] = asyncio.Event()
        t = time.perf_counter()
        await queue.enqueue("probe", i)
        await asyncio.wait_for(ready[i].wait(), 30)
        enqueue_lat.append(started[i] - t)
        await asyncio.sleep(0.01)
    await worker.stop()
    await task
    return _pct(token_lat), _pct(enqueue_lat)


async def run(kinds: list[str], due: int, waiting: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            cells: dict[str, Any] = {}
            for label, parked in (("alone", 0), ("beside", waiting)):
                url, extra = _url(kind, Path(tmp))
                queue = _build(url, extra)
                try:
                    await queue.migrate()
                    await _park(queue, waiting, wait=bool(parked))
                    cells[label] = await _drain(queue, due)
                    if parked:
                        cells["latency"] = await _latencies(queue)
                finally:
                    await queue.close()
                    await _drop(kind, queue)
            rows.append(
                (
                    kind,
                    f"{cells['alone']:,.0f}",
                    f"{cells['beside']:,.0f}",
                    f"{cells['beside'] / cells['alone']:.2f}x",
                    cells["latency"][0],
                    cells["latency"][1],
                )
            )
    return rows


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres,redis")
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--waiting", type=int, default=100_000)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.backends.split(","), args.due, args.waiting))
    out(
        f"| backend | drain {args.due:,} due jobs/s, alone | beside {args.waiting:,} waiting "
        "| ratio | complete_token→resume p50 / p99 | enqueue→start p50 / p99 |"
    )
    out("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        out("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
