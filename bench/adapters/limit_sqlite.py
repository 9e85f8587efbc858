"""limit-sqlite: stdlib sqlite3, WAL, the cycle in two BEGIN IMMEDIATE transactions."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Sequence

from bench.adapters.base import Adapter, Context
from bench.limits.files import load
from bench.limits.sqlite_common import SYNCHRONOUS, connect

INSERT = "INSERT INTO jobs (run_at, payload, created_at) VALUES (?, ?, ?)"


class LimitSqliteAdapter(Adapter):
    name = "limit-sqlite"
    family = "sqlite"
    scenarios = frozenset("ABE")
    has_bulk = True
    bulk_api = "executemany of the chunk in one transaction"
    config = (
        f"stdlib sqlite3, WAL, synchronous={SYNCHRONOUS}; worker loop: claim min(10, N) with "
        "UPDATE … RETURNING, complete them with one UPDATE (2 BEGIN IMMEDIATE per cycle)"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        self.conn: sqlite3.Connection | None = None
        await self.reset()

    @property
    def path(self) -> str:
        return str(self.workdir / "limit.db")

    async def reset(self) -> None:
        await self.teardown()
        self.conn = connect(self.path)
        self.conn.executescript(load("sqlite/schema.sql"))

    async def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        for suffix in ("", "-wal", "-shm"):
            (self.workdir / f"limit.db{suffix}").unlink(missing_ok=True)

    async def enqueue_one(self, n: int) -> None:
        assert self.conn is not None
        now = time.time()
        self.conn.execute(INSERT, (now, json.dumps({"n": n}), now))

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        assert self.conn is not None
        now = time.time()
        self.conn.execute("BEGIN")
        self.conn.executemany(INSERT, [(now, json.dumps({"n": n}), now) for n in ns])
        self.conn.execute("COMMIT")

    async def preload_finished(self, count: int) -> None:
        assert self.conn is not None
        self.conn.execute("BEGIN")
        self.conn.execute(load("sqlite/preload_finished.sql"), (time.time(), count))
        self.conn.execute("COMMIT")

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [
            sys.executable,
            "-m",
            "bench.limits.sqlite_worker",
            self.path,
            str(min(10, concurrency)),
        ]
        return [cmd] * n_processes
