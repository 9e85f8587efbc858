"""limit-postgres: the claim/complete cycle in raw SQL, driven by pgbench when it is
installed (a C client: the engine's own limit), else by a psycopg loop.

Set BENCH_PG_LIMIT=psycopg to force the loop.
"""

from __future__ import annotations

import asyncio
import glob
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench.adapters import pg
from bench.adapters.base import Adapter, Context, DrainTiming
from bench.config import PG_HOST, PG_PORT, PG_USER, pg_url
from bench.limits.files import load, path
from bench.probe import DrainTimeout, ProbeReader
from bench.procs import WorkerGroup, run_checked

DB = "bench_limit"
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


def find_pgbench() -> str | None:
    if os.environ.get("BENCH_PG_LIMIT") == "psycopg":
        return None
    found = shutil.which("pgbench") or sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if isinstance(found, list):
        return found[-1] if found else None
    return found


def _pgbench_args(pgbench: str, clients: int) -> list[str]:
    return [pgbench, "-n", "-M", "prepared", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER,
            "-c", str(clients), "-j", str(clients)]  # fmt: skip


def parse_tps(output: str) -> float:
    match = _TPS.search(output)
    if not match:
        raise RuntimeError(f"no tps in pgbench output: {output[-500:]}")
    return float(match.group(1))


class LimitPostgresAdapter(Adapter):
    name = "limit-postgres"
    family = "postgres"
    scenarios = frozenset("ABE")
    has_bulk = True
    bulk_api = "INSERT … SELECT FROM unnest(text[]) per chunk"

    def __init__(self) -> None:
        super().__init__()
        self.pgbench = find_pgbench()
        self._claim_batch = 10
        self._queued = 0

    @property
    def method(self) -> str:
        return "pgbench" if self.pgbench else "psycopg loop"

    @property
    def config(self) -> str:  # type: ignore[override]
        return (
            f"{self.method}; enqueue: one INSERT per autocommit; worker: claim min(10, N) with "
            "FOR UPDATE SKIP LOCKED … RETURNING, complete them with one UPDATE (2 autocommits)"
        )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        await pg.create_database(DB)
        self.conn: Any = None
        await self.reset()

    async def reset(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await pg.reset_public_schema(DB)
        await pg.execute(DB, load("pg/schema.sql"))
        self.conn = await psycopg.AsyncConnection.connect(pg_url(DB), autocommit=True)

    async def teardown(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await pg.drop_database(DB)

    async def enqueue_one(self, n: int) -> None:
        await self.conn.execute(
            "INSERT INTO jobs (channel, priority, run_at, payload) "
            "VALUES ('default', 0, now(), %s::jsonb)",
            (json.dumps({"n": n}),),
        )

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self.conn.execute(load("pg/insert_many.sql"), ([json.dumps({"n": n}) for n in ns],))

    async def timed_enqueue_one(self, count: int) -> float | None:
        """A: one INSERT per transaction from pgbench (no Python client in the way)."""
        if not self.pgbench:
            return None
        cmd = [
            *_pgbench_args(self.pgbench, 1),
            "-t",
            str(count),
            "-f",
            str(path("pg/insert1.sql")),
            DB,
        ]
        tps = parse_tps(await asyncio.to_thread(run_checked, cmd))
        return count / tps

    async def after_preload(self) -> None:
        await pg.analyze(DB)

    async def preload_finished(self, count: int) -> None:
        await pg.execute(DB, load("pg/preload_finished.sql"), count)
        await pg.execute(DB, "VACUUM ANALYZE jobs")

    def start_workers(
        self, n_processes: int, concurrency: int, probe_path: Path, sleep_ms: int = 0
    ) -> WorkerGroup:
        self._claim_batch = min(10, concurrency)
        self._clients = n_processes
        with psycopg.connect(pg_url(DB)) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE state = 0").fetchone()
            self._queued = int(row[0]) if row else 0
        return super().start_workers(n_processes, concurrency, probe_path, sleep_ms)

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        batch = min(10, concurrency)
        if self.pgbench:
            # Enough cycles to drain what is queued; a late empty claim completes nothing.
            cycles = max(1, math.ceil(self._queued / (batch * n_processes)))
            return [[*_pgbench_args(self.pgbench, n_processes), "-t", str(cycles),
                     "-D", f"n={batch}", "-f", str(path("pg/cycle.sql")), DB]]  # fmt: skip
        cmd = [sys.executable, "-m", "bench.limits.pg_worker", pg_url(DB), str(batch)]
        return [cmd] * n_processes

    async def wait_until_drained(
        self,
        probe: ProbeReader,
        ids: Iterable[int],
        handle: WorkerGroup,
        *,
        timeout: float,
        on_first: Any = None,
    ) -> DrainTiming | None:
        if not self.pgbench:
            return await super().wait_until_drained(
                probe, ids, handle, timeout=timeout, on_first=on_first
            )
        if on_first is not None:
            on_first()
        deadline = time.monotonic() + timeout
        while handle.alive():  # pgbench exits when its cycles are done
            if time.monotonic() > deadline:
                raise DrainTimeout("pgbench did not finish in time")
            await asyncio.sleep(0.05)
        output = handle.log_path.read_text()
        tps = parse_tps(output)
        cur = await self.conn.execute(  # the timed jobs only: E's history has n < 0
            "SELECT count(*) FROM jobs WHERE state = 2 AND (payload->>'n')::int >= 0"
        )
        completed = int((await cur.fetchone())[0])
        expected = len(list(ids))
        if completed != expected:
            raise DrainTimeout(f"pgbench completed {completed} of {expected} jobs")
        cycles = math.ceil(self._queued / (self._claim_batch * self._clients)) * self._clients
        return DrainTiming(
            jobs=completed, seconds=cycles / tps, extra={"method": "pgbench", "cycles_per_s": tps}
        )
