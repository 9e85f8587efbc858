"""Connections of the PostgreSQL backend: URL options, the pool, error translation, and
the caller's own connection for transactional enqueue.

Fault handling, in short: every driver error becomes :class:`BackendError`; a connection
that died (``pg_terminate_backend``, a server restart) is noticed before use without a
round trip (its socket turned readable while idle) and swapped for a fresh one, and one
that dies during a call fails that call and is dropped by the pool, which reconnects by
itself. Nothing waits long: connect, pool checkout and TCP keepalives are bounded.

The pool hands out the connection returned last (LIFO), as Rails, node-postgres and
npgsql do: psycopg_pool's own order is round-robin, which after a burst (a worker at
concurrency 50, a bulk enqueue) spreads every later call over all the connections the
burst opened. Each call then lands on a server process whose caches went cold, and the
cold ones never sit idle long enough to be closed. Measured on the durable-waits bench:
a drain round-robined over 11 connections ran 15 % slower than over the 2 it needs.
"""

from __future__ import annotations

import select
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from conveyor.errors import BackendError, UnsupportedError, ValidationError

__all__ = [
    "LifoConnectionPool",
    "PoolOptions",
    "backend_errors",
    "caller_connection",
    "configure_session",
    "parse_url",
    "pooled",
]

# libpq connection parameters applied unless the URL sets them: a dead server or network
# is detected in seconds, not after the kernel's two-hour keepalive default.
LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "application_name": "conveyor",
}


class LifoConnectionPool(AsyncConnectionPool[psycopg.AsyncConnection[Any]]):
    """An :class:`AsyncConnectionPool` that hands out its most recently returned idle
    connection. Only the order changes: the pool takes idle connections from the left
    of its deque and returns them to the right, so one rotation before each take makes
    the right end (the warmest) the one taken, and the left end (idle longest) the one
    the pool's ``max_idle`` shrink closes. The test suite pins this order, so a
    psycopg_pool release that renames its deque fails a test instead of going quietly
    back to round-robin."""

    async def _get_ready_connection(
        self, timeout: float | None
    ) -> psycopg.AsyncConnection[Any] | None:
        idle = getattr(self, "_pool", None)
        if isinstance(idle, deque) and len(idle) > 1:
            idle.rotate(1)
        return await super()._get_ready_connection(timeout)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """conveyor's own URL query parameters (removed before the URL reaches libpq).

    Attributes:
        min_size: connections kept open (``pool_min_size``). Defaults to 1.
        max_size: most connections open at once (``pool_max_size``). Defaults to 10.
        timeout: seconds a call waits for a connection before failing with
            BackendError (``pool_timeout``). Defaults to 5.
    """

    min_size: int = 1
    max_size: int = 10
    timeout: float = 5.0


def parse_url(url: str) -> tuple[str, PoolOptions]:
    """Split a ``postgresql://`` / ``postgres://`` URL into a libpq conninfo URL (with
    conveyor's defaults) and the pool options."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValidationError(f"not a PostgreSQL URL: {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    values: dict[str, Any] = {}
    try:
        if "pool_min_size" in query:
            values["min_size"] = int(query.pop("pool_min_size"))
        if "pool_max_size" in query:
            values["max_size"] = int(query.pop("pool_max_size"))
        if "pool_timeout" in query:
            values["timeout"] = float(query.pop("pool_timeout"))
    except ValueError as exc:
        raise ValidationError(f"bad pool option in the PostgreSQL URL: {exc}") from None
    options = PoolOptions(**values)
    if not 0 <= options.min_size <= options.max_size or options.max_size < 1:
        raise ValidationError("pool_min_size must be >= 0 and <= pool_max_size (>= 1)")
    if not options.timeout > 0:
        raise ValidationError("pool_timeout must be > 0 seconds")
    for key, value in LIBPQ_DEFAULTS.items():
        query.setdefault(key, value)
    conninfo = urlunsplit(
        ("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment)
    )
    return conninfo, options


@contextmanager
def backend_errors(action: str) -> Iterator[None]:
    """Translate driver failures into BackendError (``raise … from`` the original)."""
    try:
        yield
    except (psycopg.Error, OSError, UnicodeError) as exc:
        raise BackendError(f"PostgreSQL {action} failed: {exc}", transient=_transient(exc)) from exc


def _transient(exc: BaseException) -> bool:
    """A lost or busy connection may work again; refused data (DataError, a constraint,
    bad SQL, text PostgreSQL cannot store) would fail the same way again."""
    if isinstance(exc, UnicodeError | psycopg.DataError | psycopg.IntegrityError):
        return False
    return not isinstance(exc, psycopg.ProgrammingError | psycopg.NotSupportedError)


async def configure_session(conn: psycopg.AsyncConnection[Any]) -> None:
    """Session settings of every pooled connection.

    ``plan_cache_mode = force_generic_plan``: the hot statements (claim, complete,
    heartbeat, enqueue) are prepared by psycopg after a few runs, and their plans do not
    depend on the parameter values (the partial indexes fit any value). Left to itself,
    PostgreSQL keeps re-planning a prepared statement with the values of each call while
    it judges custom plans cheaper, which costs more than running the big claim and
    complete statements.

    ``enable_bitmapscan = off``: the claim must walk a claim index in claim order and
    stop after its batch. Whenever the table statistics lag behind the queue (a new
    table, or a burst since autovacuum last analysed it, up to a minute), the planner
    thinks few jobs are queued and prefers a bitmap scan of every due queued row
    followed by a sort: the claim then reads and sorts the whole backlog on every call
    (measured: 2.3 ms of a 5 ms exchange at 2,000 queued jobs, growing with the queue).
    No statement of conveyor's needs a bitmap scan: without it the planner takes the
    ordered index scan whatever the statistics say (``test_claim_plan.py``). The
    settings apply only to conveyor's own pooled connections, never to a caller's.
    """
    await conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_bitmapscan = off")


def _looks_dead(conn: psycopg.AsyncConnection[Any]) -> bool | None:
    """False when the idle connection is fine, True when it is closed or broken, None
    when its socket has something to say (an idle pooled connection only hears from the
    server when it is being terminated): then a real check decides."""
    if conn.closed or conn.broken:
        return True
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            readable = bool(poller.poll(0))
        else:  # pragma: no cover - Windows
            readable = bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError, psycopg.Error):
        return True
    return None if readable else False


async def _usable(conn: psycopg.AsyncConnection[Any]) -> bool:
    dead = _looks_dead(conn)
    if dead is None:
        try:
            await conn.execute("")
            return True
        except psycopg.Error:
            return False
    return not dead


@asynccontextmanager
async def pooled(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], timeout: float
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A healthy pooled connection. Dead idle connections are closed and handed back
    (the pool replaces them) without the pool's retry back-off, so the first call after
    a server restart does not wait on them."""
    for _ in range(pool.max_size + 1):
        conn = await pool.getconn(timeout)
        if await _usable(conn):
            break
        await conn.close()
        await pool.putconn(conn)
    else:  # pragma: no cover - every connection of a full pool just died at once
        raise psycopg.OperationalError("no live connection in the pool")
    try:
        yield conn
    finally:
        await pool.putconn(conn)


def caller_connection(obj: Any, *, sync: bool) -> Any:
    """The psycopg connection inside what the caller passed as ``connection=``.

    Accepts a psycopg ``AsyncConnection`` (async enqueue) or ``Connection`` (sync
    enqueue, or async enqueue through a worker thread), or a SQLAlchemy connection on
    the psycopg driver, unwrapped through its DBAPI ``driver_connection``: pass
    ``session.connection()`` / ``engine.connect()`` (sync), or an ``AsyncConnection``
    / ``await async_session.connection()`` (asyncio); the job is then part of the
    SQLAlchemy transaction. Explicitly: ``sa_conn.connection.driver_connection`` (sync)
    or ``(await sa_async_conn.get_raw_connection()).driver_connection``.
    """
    conn = obj
    for _ in range(4):
        if isinstance(conn, psycopg.AsyncConnection | psycopg.Connection):
            break
        # SQLAlchemy: PoolProxiedConnection.driver_connection, Connection.connection,
        # AsyncConnection.sync_connection (each a documented public attribute)
        inner = getattr(conn, "driver_connection", None)
        if inner is None:
            inner = getattr(conn, "sync_connection", None)
        if inner is None:
            inner = getattr(conn, "connection", None)
        if inner is None or inner is conn:
            break
        conn = inner
    if isinstance(conn, psycopg.AsyncConnection):
        if sync:
            raise UnsupportedError(
                "enqueue_sync(connection=…) needs a sync psycopg Connection; "
                "use `await queue.enqueue(…, connection=…)` with an AsyncConnection"
            )
        return conn
    if isinstance(conn, psycopg.Connection):
        return conn
    raise ValidationError(
        "connection= must be a psycopg Connection or AsyncConnection (or a SQLAlchemy "
        f"connection on psycopg) for a PostgreSQL queue, got {type(obj).__name__}"
    )
