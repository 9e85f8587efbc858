"""Scenarios A-E, each run against one adapter inside one child process.

Every scenario returns a list of rows (dicts); each row is one measured variant with its
headline value under ``value`` (jobs/s, or ms for latency) plus details.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.adapters.base import Adapter, Context
from bench.config import Sizes
from bench.probe import ProbeReader
from bench.procs import machine_busy_seconds
from bench.stats import percentile, tenths

Row = dict[str, Any]


def _drain_timeout(jobs: int) -> float:
    return 60.0 + jobs / 20.0  # generous: the slowest peers drain ~50 jobs/s


# -- A: enqueue throughput ---------------------------------------------------------------
async def scenario_a(adapter: Adapter, ctx: Context, sizes: Sizes) -> list[Row]:
    rows = []
    n = sizes.a_jobs
    for i in range(sizes.a_warmup):  # warm connections, caches, prepared statements
        await adapter.enqueue_one(-1 - i)
    seconds = await adapter.timed_enqueue_one(n)
    if seconds is None:
        t0 = time.perf_counter()
        for i in range(n):
            await adapter.enqueue_one(i)
        seconds = time.perf_counter() - t0
    rows.append(_rate_row("one-by-one", n, seconds))
    if adapter.has_bulk:
        await adapter.reset()
        chunk = sizes.bulk_chunk
        await adapter.enqueue_many(range(-chunk, 0))  # warm-up chunk
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            await adapter.enqueue_many(range(start, min(n, start + chunk)))
        seconds = time.perf_counter() - t0
        row = _rate_row(f"bulk ({chunk}/call)", n, seconds)
        row["api"] = adapter.bulk_api
        rows.append(row)
    return rows


def _rate_row(variant: str, jobs: int, seconds: float) -> Row:
    return {"variant": variant, "jobs": jobs, "seconds": seconds, "value": jobs / seconds}


# -- drains: B, D, E ---------------------------------------------------------------------
async def drain(
    adapter: Adapter,
    ctx: Context,
    sizes: Sizes,
    *,
    variant: str,
    jobs: int,
    processes: int,
    concurrency: int,
    sleep_ms: int = 0,
    preloaded_finished: int = 0,
) -> Row:
    """Pre-load ``jobs`` (not timed), start the workers, time until all have completed."""
    ids = range(jobs)
    await adapter.preload(ids, sizes.bulk_chunk)
    probe_path = ctx.workdir / f"{variant.replace(' ', '_').replace(',', '')}.probe"
    reader = ProbeReader(probe_path)
    handle = adapter.start_workers(processes, concurrency, probe_path, sleep_ms)
    cpu: dict[str, float] = {}

    def on_first() -> None:
        cpu["worker"], cpu["machine"] = handle.cpu_seconds(), machine_busy_seconds()

    try:
        timing = await adapter.wait_until_drained(
            reader, ids, handle, timeout=_drain_timeout(jobs), on_first=on_first
        )
        worker_cpu = handle.cpu_seconds() - cpu.get("worker", 0.0)
        machine_cpu = machine_busy_seconds() - cpu.get("machine", 0.0)
        members = handle.process_count()
    finally:
        adapter.stop_workers(handle)
    reader.poll()  # late duplicates written while stopping count too
    row: Row = {
        "variant": variant,
        "jobs": jobs,
        "processes": processes,
        "concurrency": concurrency,
        "worker_procs_seen": members,
        "duplicates": reader.duplicates,
        "worker_cpu_ms_per_1k": 1e6 * worker_cpu / jobs,
        "machine_cpu_ms_per_1k": 1e6 * machine_cpu / jobs,
    }
    await _check_store(adapter, row, jobs + preloaded_finished)
    if timing is not None:  # timed by the adapter itself (pgbench)
        # pgbench has exited by now, so its group CPU cannot be read: leave it out
        row.update(seconds=timing.seconds, value=timing.jobs / timing.seconds, **timing.extra)
        row["worker_cpu_ms_per_1k"] = None
        return row
    first_start, last_end = reader.window(ids)
    row.update(
        seconds=last_end - first_start,
        value=jobs / (last_end - first_start),
        startup_s=first_start - handle.started_at,
        incl_startup=jobs / (last_end - handle.started_at),
        tenths=tenths([reader.starts[i] for i in ids], [reader.ends[i] for i in ids]),
    )
    return row


async def _check_store(adapter: Adapter, row: Row, expected: int) -> None:
    """Compare the store's own completed count with what the probe saw."""
    stored = await adapter.completed_count()
    if stored is None:
        return
    row["store_completed"] = stored
    if stored != expected:
        row["warning"] = f"the store records {stored:,} completed jobs, expected {expected:,}"


async def scenario_b(adapter: Adapter, ctx: Context, sizes: Sizes) -> list[Row]:
    rows = []
    for processes in (1, 2):
        await adapter.reset()
        label = f"{processes} proc" + ("s" if processes > 1 else "")
        rows.append(
            await drain(
                adapter,
                ctx,
                sizes,
                variant=label,
                jobs=sizes.b_jobs,
                processes=processes,
                concurrency=sizes.b_concurrency,
            )
        )
    return rows


async def scenario_d(adapter: Adapter, ctx: Context, sizes: Sizes) -> list[Row]:
    await adapter.reset()
    row = await drain(
        adapter,
        ctx,
        sizes,
        variant=f"sleep {sizes.d_sleep_ms} ms",
        jobs=sizes.d_jobs,
        processes=1,
        concurrency=sizes.d_concurrency,
        sleep_ms=sizes.d_sleep_ms,
    )
    row["ideal"] = sizes.d_concurrency * 1000 / sizes.d_sleep_ms
    return [row]


async def scenario_e(adapter: Adapter, ctx: Context, sizes: Sizes) -> list[Row]:
    await adapter.reset()
    t0 = time.perf_counter()
    await adapter.preload_finished(sizes.e_finished)
    preload_s = time.perf_counter() - t0
    row = await drain(
        adapter,
        ctx,
        sizes,
        variant=f"+{sizes.e_finished:,} finished",
        jobs=sizes.e_jobs,
        processes=1,
        concurrency=sizes.b_concurrency,
        preloaded_finished=sizes.e_finished,
    )
    row.update(finished_rows=sizes.e_finished, preload_finished_s=preload_s)
    return [row]


# -- C: latency --------------------------------------------------------------------------
async def scenario_c(adapter: Adapter, ctx: Context, sizes: Sizes) -> list[Row]:
    await adapter.reset()
    probe_path = ctx.workdir / "latency.probe"
    reader = ProbeReader(probe_path)
    handle = adapter.start_workers(1, sizes.b_concurrency, probe_path)
    n = sizes.c_jobs
    enqueued_at: list[float] = []
    call_ms: list[float] = []
    try:
        warm = [-1 - i for i in range(sizes.c_warmup)]
        for i in warm:
            await adapter.enqueue_one(i)
        await reader.wait_for(warm, timeout=120, alive=handle.alive)
        await asyncio.sleep(sizes.c_idle_s)  # deliberately idle: not synchronisation
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / sizes.c_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            enqueued_at.append(time.time())
            c0 = time.perf_counter()
            await adapter.enqueue_one(i)
            call_ms.append(1000 * (time.perf_counter() - c0))
        achieved = n / (time.perf_counter() - t0)
        await reader.wait_for(range(n), timeout=_drain_timeout(n), alive=handle.alive)
    finally:
        adapter.stop_workers(handle)
    reader.poll()
    check: Row = {}
    await _check_store(adapter, check, n + sizes.c_warmup)
    lat = [1000 * (reader.starts[i] - enqueued_at[i]) for i in range(n)]
    return [
        {
            "variant": f"{n} jobs at {sizes.c_rate:g}/s",
            "jobs": n,
            "value": percentile(lat, 50),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
            "first_after_idle_ms": lat[0],
            "enqueue_call_p50_ms": percentile(call_ms, 50),
            "achieved_rate": achieved,
            "duplicates": reader.duplicates,
            **check,
        }
    ]


SCENARIOS: dict[str, Callable[[Adapter, Context, Sizes], Awaitable[list[Row]]]] = {
    "A": scenario_a,
    "B": scenario_b,
    "C": scenario_c,
    "D": scenario_d,
    "E": scenario_e,
}

TITLES = {
    "A": "A. Enqueue throughput, one client (jobs/s; higher is better)",
    "B": "B. Drain pre-loaded no-op jobs, concurrency 10 (jobs/s; higher is better)",
    "C": "C. Enqueue -> start latency, idle worker (ms; lower is better)",
    "D": "D. Drain jobs that each sleep 10 ms, concurrency 50 (jobs/s; higher is better)",
    "E": "E. Drain with a large table of finished jobs (jobs/s; higher is better)",
}
