"""The SQLite backend's connection: opening the file, busy-retried transactions, schema.

One ``sqlite3`` connection per backend (autocommit, WAL, ``busy_timeout=0``), opened by
the first call that needs it, sync or async (``connect()`` only opens it early). Each
transaction is a short synchronous block run under a ``threading.Lock``, never held
across an ``await``, so the one connection serves every event loop and thread of the
process (``shared_across_loops``).

``SQLITE_BUSY`` (another process holds the write lock) is retried here with short sleeps,
asynchronous in ``_run`` and blocking in ``_run_sync``, for up to ``BUSY_TIMEOUT``: a
worker waiting for another process's lock never blocks its event loop, and users never
see "database is locked".
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from conveyor.backends.base import ClaimedJob, ClaimParams
from conveyor.backends.sql import load_queries, read_sql
from conveyor.backends.sqlite.wakeups import WakeUps
from conveyor.errors import BackendError, ValidationError
from conveyor.settings import Settings

__all__ = ["BUSY_TIMEOUT", "Q", "SQLiteConnection", "path_from_url"]

T = TypeVar("T")

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's lock before failing
_PACKAGE = "conveyor.backends.sqlite"
Q = load_queries(_PACKAGE, "queries.sql")  # the named queries, loaded once


def path_from_url(url: str) -> tuple[str, bool]:
    """``sqlite:///rel.db`` (relative to cwd), ``sqlite:////abs.db``, ``sqlite:///:memory:``."""
    if not url.startswith("sqlite://"):
        raise ValidationError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    path = rest.split("?", 1)[0]
    if not path:
        raise ValidationError(f"sqlite URL {url!r} names no file: use sqlite:///path/to/jobs.db")
    return path, path == ":memory:"


_ADD_COLUMN = re.compile(r"\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", re.IGNORECASE)


def _statements(sql: str) -> list[str]:
    """The statements of a packaged ``.sql`` file, comments dropped (none of them has a
    string literal with "--")."""
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines():
        buf += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    return statements


def _autoincrement(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` was created with an AUTOINCREMENT key (its ids never reused)."""
    row = conn.execute(Q["table_sql"], (table,)).fetchone()
    return row is not None and "AUTOINCREMENT" in str(row[0]).upper()


def _busy_backoff() -> Iterator[tuple[float, bool]]:
    """(sleep before the next attempt, is this attempt the last) for up to BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.0005
    while True:
        final = time.monotonic() > deadline
        yield delay, final
        if final:
            return
        delay = min(delay * 2, 0.02)


def _transient(exc: sqlite3.OperationalError) -> bool:
    """Busy, locked, I/O or open failures may pass; other operational errors (malformed
    JSON, a missing table) would fail the same way again."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
            sqlite3.SQLITE_IOERR,
            sqlite3.SQLITE_CANTOPEN,
            sqlite3.SQLITE_FULL,
            sqlite3.SQLITE_PROTOCOL,
        )
    return _is_busy(exc)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    msg = str(exc)
    return "locked" in msg or "busy" in msg


class SQLiteConnection:
    """What every part of the backend shares: the connection, its lock, the busy-retried
    transaction runners, the schema and the wake-ups (see ``backend.py``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path, self.memory = path_from_url(settings.url)
        query = settings.url.partition("?")[2]
        self.synchronous = "FULL" if "synchronous=full" in query.lower() else "NORMAL"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement sequence at a time on _conn
        self._wakeups = WakeUps()

    # -- connection -------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the connection now (every other call opens it on first use anyway)."""
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        """The open connection, opened on first use. Call with ``self._lock`` held."""
        if self._conn is not None:
            return self._conn
        try:
            if not self.memory:
                parent = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            conn.row_factory = sqlite3.Row
            if not self.memory:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("PRAGMA temp_store=MEMORY")
            # Busy waits are done here, asynchronously, not inside sqlite's C handler.
            conn.execute("PRAGMA busy_timeout=0")
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._conn = conn
        return conn

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- transactions -----------------------------------------------------------------
    def _attempt(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            conn = self._connection()
            if not write:
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _try(
        self, fn: Callable[[sqlite3.Connection], T], write: bool, final: bool
    ) -> tuple[bool, T | None]:
        """One attempt: (True, result), or (False, None) when another process holds the
        write lock and this was not the ``final`` attempt. Other errors: BackendError."""
        try:
            return True, self._attempt(fn, write)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or final:
                raise BackendError(
                    f"SQLite {self.path!r}: {exc}", transient=_transient(exc)
                ) from exc
        except (sqlite3.Error, UnicodeError) as exc:
            # Refused data (a constraint, text that is not UTF-8): it would fail again.
            raise BackendError(f"SQLite {self.path!r}: {exc}", transient=False) from exc
        return False, None

    async def _run(self, fn: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run ``fn`` (in a ``BEGIN IMMEDIATE`` transaction when ``write``; else its
        statements autocommit), retrying lock contention without blocking the loop."""
        for delay, final in _busy_backoff():
            done, result = self._try(fn, write, final)
            if done:
                return result  # type: ignore[return-value]
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_sync(self, fn: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """``_run`` for sync callers (``enqueue_many_sync`` in the caller's thread)."""
        for delay, final in _busy_backoff():
            done, result = self._try(fn, write, final)
            if done:
                return result  # type: ignore[return-value]
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema -----------------------------------------------------------------------
    async def migrate(self) -> None:
        """schema.sql, the tables rebuilt since (an events table without AUTOINCREMENT),
        then the columns added since (columns.sql) that a table lacks, in one transaction."""
        statements = _statements(self.migration_sql())
        rebuild_events = _statements(read_sql(_PACKAGE, "rebuild_events.sql"))
        added = [(_ADD_COLUMN.match(s), s) for s in _statements(read_sql(_PACKAGE, "columns.sql"))]

        def apply(conn: sqlite3.Connection) -> None:
            for statement in statements:
                conn.execute(statement)
            if not _autoincrement(conn, "conveyor_events"):
                for statement in rebuild_events:
                    conn.execute(statement)
            for match, statement in added:
                if match is not None:
                    table, column = match.groups()
                    if conn.execute(Q["has_column"], (table, column)).fetchone() is not None:
                        continue
                conn.execute(statement)

        await self._run(apply)

    def migration_sql(self) -> str:
        return read_sql(_PACKAGE, "schema.sql")

    # -- wake-ups ---------------------------------------------------------------------
    def wake(self) -> None:
        self._wakeups.wake()

    async def wait_for_work(
        self, timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        with self._lock:
            self._connection()  # the polls below read the open connection, never reopen
        await self._wakeups.wait(timeout, self._data_version)
        return []  # no hand-off: the caller claims

    def _data_version(self) -> int | None:
        """Changes when another connection commits (cheap: shared memory); None when
        closed."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return None
            try:
                return int(conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite {self.path!r}: {exc}") from exc
