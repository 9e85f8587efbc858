"""limit-sqlite connection settings, shared by the driver and the worker loop."""

from __future__ import annotations

import os
import sqlite3

# NORMAL is what WAL-mode job queues normally run with; BENCH_SQLITE_SYNC=FULL to compare.
SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNC", "NORMAL")


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    return conn
