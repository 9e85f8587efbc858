"""Small Redis helpers for the adapters."""

from __future__ import annotations

import redis

from bench.config import REDIS_DB, REDIS_HOST, REDIS_PORT


def client(system: str) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB[system])


def flush(system: str) -> None:
    """FLUSHDB of this system's own database number (never FLUSHALL)."""
    db = REDIS_DB[system]
    assert db != 0, "db 0 is shared with the project's tests"
    with client(system) as r:
        r.flushdb()


def delete_prefix(system: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (UNLINK in batches); returns how many."""
    removed = 0
    with client(system) as r:
        batch: list[bytes] = []
        for key in r.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                removed += r.unlink(*batch)
                batch.clear()
        if batch:
            removed += r.unlink(*batch)
    return removed
