"""Scenario E: load 1,000,000 *finished* conveyor jobs fast, straight into the store.

Going through ``enqueue_many`` and a worker would take minutes per repetition, so each
backend gets a native bulk insert of rows that look like completed jobs. The statements
are built from the live schema (column names and types read from the database after
``queue.migrate()``), so they follow conveyor's schema files without copying them: a
required column this module does not know about fails loudly, naming it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg

from bench.config import pg_url

# What a finished no-op job holds, column by column. Rows are numbered g = 1..count;
# ids stay negative in the payload so they can never collide with the timed jobs.
_TEXT = {
    "name": "'noop'",
    "channel": "'default'",
    "state": "'completed'",
}
_INT = {"priority": "0", "attempts": "1", "max_attempts": "1", "progress": "100"}
_FALSE = ("remove_on_complete", "cancel_requested")
_TIMES = ("run_at", "created_at", "started_at", "finished_at")


# -- SQLite ------------------------------------------------------------------------------
def sqlite_finished(path: str, count: int) -> None:
    """One INSERT … SELECT over a recursive counter, in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        table = _sqlite_jobs_table(conn)
        exprs: dict[str, str] = {}
        now = time.time()
        for cid, col, _type, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
            del cid
            if pk:
                continue
            expr = _sqlite_expr(col, now)
            if expr is not None:
                exprs[col] = expr
            elif notnull and default is None:
                raise RuntimeError(f"E preload: no value for required column {table}.{col}")
        cols = ", ".join(exprs)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f"WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < ?) "
            f"INSERT INTO {table} ({cols}) SELECT {', '.join(exprs.values())} FROM c",
            (count,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _sqlite_jobs_table(conn: sqlite3.Connection) -> str:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for candidate in ("conveyor_jobs", "jobs"):
        if candidate in names:
            return candidate
    raise RuntimeError(f"E preload: no conveyor jobs table among {sorted(names)}")


def _sqlite_expr(col: str, now: float) -> str | None:
    if col in _TEXT:
        return _TEXT[col]
    if col in _INT:
        return _INT[col]
    if col in _FALSE:
        return "0"
    if col == "payload":
        return "json_object('n', -g)"
    if col in _TIMES:
        return f"{now - 3600.0} + g / 1000.0"  # finished within the last hour
    return None


# -- PostgreSQL --------------------------------------------------------------------------
async def postgres_finished(db: str, schema: str, count: int) -> None:
    """One server-side INSERT … SELECT FROM generate_series, then VACUUM ANALYZE."""
    async with await psycopg.AsyncConnection.connect(pg_url(db), autocommit=True) as conn:
        table = await _pg_jobs_table(conn, schema)
        cur = await conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            "       a.atthasdef, a.attidentity <> '' OR a.attgenerated <> ''"
            "  FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (table,),
        )
        exprs: dict[str, str] = {}
        for col, typ, notnull, hasdef, generated in await cur.fetchall():
            if generated or col == "id":
                continue
            expr = _pg_expr(col, typ)
            if expr is not None:
                exprs[f'"{col}"'] = f"({expr})::{typ}"
            elif notnull and not hasdef:
                raise RuntimeError(f"E preload: no value for required column {table}.{col}")
        await conn.execute(
            f"INSERT INTO {table} ({', '.join(exprs)}) "
            f"SELECT {', '.join(exprs.values())} FROM generate_series(1, %s) AS g",
            (count,),
        )
        await conn.execute(f"VACUUM ANALYZE {table}")


async def _pg_jobs_table(conn: psycopg.AsyncConnection[tuple[object, ...]], schema: str) -> str:
    for candidate in ("jobs", "conveyor_jobs"):
        cur = await conn.execute("SELECT to_regclass(%s)::text", (f'"{schema}"."{candidate}"',))
        row = await cur.fetchone()
        if row and row[0]:
            return str(row[0])
    raise RuntimeError(f"E preload: no conveyor jobs table in schema {schema!r}")


def _pg_expr(col: str, typ: str) -> str | None:
    if col in _TEXT:
        return _TEXT[col]
    if col in _INT:
        return _INT[col]
    if col in _FALSE:
        return "false" if typ == "boolean" else "0"
    if col == "payload":
        return "json_build_object('n', -g)::text"
    if col in _TIMES:
        if typ.startswith("timestamp"):
            return "now() - interval '1 hour' + g * interval '1 millisecond'"
        return "extract(epoch FROM now()) - 3600 + g / 1000.0"
    return None


# -- Redis -----------------------------------------------------------------------------
_REDIS_BATCH = 10_000  # jobs per script call, so Redis is never blocked for long


def redis_finished(url: str, prefix: str, count: int) -> None:
    """Ids reserved with one INCRBY, then a Lua loop per batch (conveyor_redis_preload.lua),
    then the per-channel counts and the channel set, as enqueue + complete keep them."""
    import redis

    # The key layout is conveyor's own (backends/redis/keys.py), used here, not copied.
    from conveyor.backends.redis.keys import FAMILIES, Keys, order_key

    keys = Keys(prefix)
    script_text = (Path(__file__).parent / "conveyor_redis_preload.lua").read_text()
    now = time.time()
    run_at = now - 3600.0
    with redis.Redis.from_url(url) as r:
        script = r.register_script(script_text)
        last = int(r.incrby(keys.id, count))
        first = last - count + 1
        lua_keys = [
            keys.fixed("all"),
            keys.state("completed"),
            keys.base + FAMILIES["done"] + "completed",
        ]
        for start in range(first, last + 1, _REDIS_BATCH):
            end = min(last, start + _REDIS_BATCH - 1)
            t0 = run_at + (start - first) / 1000.0
            args = [keys.base + FAMILIES["job"], start, end, t0, run_at, order_key(run_at)]
            script(keys=lua_keys, args=args)
        r.hincrby(keys.counts("default"), "completed", count)
        r.sadd(keys.channels, "default")
