"""The SQLite backend: stdlib ``sqlite3``, WAL, ``BEGIN IMMEDIATE``, ``UPDATE … RETURNING``.

Writers are serialised by SQLite itself. The connection runs with ``busy_timeout=0`` and
this module retries ``SQLITE_BUSY`` with short asynchronous sleeps (up to ``BUSY_TIMEOUT``),
so a worker waiting for another process's write lock never blocks its event loop and
users never see "database is locked". Each transaction is a short synchronous block, so
the one connection can serve the event loop and the sync-enqueue portal thread under a
``threading.Lock``.

Wake-ups: an in-process signal (``wake()``), and ``PRAGMA data_version`` (which changes
when another connection commits) polled every few milliseconds while idle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from conveyor.backends.base import (
    CancelOutcome,
    ChannelStats,
    ClaimedJob,
    ClaimParams,
    CronFire,
    CronRecord,
    EnqueueParams,
    EnqueueResult,
    ExpiredLease,
    HeartbeatParams,
    HeartbeatResult,
    JobFilter,
    LogEntry,
    NewJob,
    Outcome,
    RetryOutcome,
)
from conveyor.backends.rows import event_from_row, job_from_row, log_from_row
from conveyor.backends.sql import load_queries, read_sql
from conveyor.errors import BackendError, ValidationError
from conveyor.models import Event, Job, JobState, LogRecord
from conveyor.settings import Settings

__all__ = ["SQLiteBackend"]

log = logging.getLogger("conveyor")
T = TypeVar("T")

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's lock before failing
_Q = load_queries(__package__ or "conveyor.backends.sqlite", "queries.sql")


def _path_from_url(url: str) -> tuple[str, bool]:
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


def _store_event(
    conn: sqlite3.Connection,
    job_id: int,
    type_: str,
    job: Sequence[Any],
    attempt: int,
    at: float,
    data: dict[str, Any] | None = None,
) -> None:
    """Store one event for a job; ``job`` is a row starting (name, tenant, …)."""
    conn.execute(
        _Q["insert_event"],
        {
            "job_id": job_id,
            "type": type_,
            "job_name": job[0],
            "tenant": job[1],
            "attempt": attempt,
            "at": at,
            "data": json.dumps(data) if data is not None else None,
        },
    )


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


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    msg = str(exc)
    return "locked" in msg or "busy" in msg


class SQLiteBackend:
    """Backend on one SQLite file (or ``:memory:``), safe across worker processes."""

    name = "sqlite"
    supports_transactions = True

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path, self.memory = _path_from_url(settings.url)
        query = settings.url.partition("?")[2]
        self.synchronous = "FULL" if "synchronous=full" in query.lower() else "NORMAL"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._data_version = -1
        self._last_activity = 0.0

    # -- connection -------------------------------------------------------------------
    async def connect(self) -> None:
        self._connect_sync()
        self._loop = asyncio.get_running_loop()

    def _connect_sync(self) -> sqlite3.Connection:
        with self._lock:
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
            except (sqlite3.Error, OSError) as exc:
                raise BackendError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            # Busy waits are done here, asynchronously, not inside sqlite's C handler.
            conn.execute("PRAGMA busy_timeout=0")
            self._conn = conn
            return conn

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- transactions -----------------------------------------------------------------
    def _attempt(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn or self._connect_sync()
        with self._lock:
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
                raise BackendError(f"SQLite {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite {self.path!r}: {exc}") from exc
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
        """``_run`` for sync callers (enqueue_sync in the caller's thread)."""
        for delay, final in _busy_backoff():
            done, result = self._try(fn, write, final)
            if done:
                return result  # type: ignore[return-value]
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def migrate(self) -> None:
        # Comments are dropped first: the schema has no string literal with "--".
        lines = [line.split("--", 1)[0] for line in self.migration_sql().splitlines()]
        statements: list[str] = []
        buf = ""
        for line in lines:
            buf += line + "\n"
            if sqlite3.complete_statement(buf):
                statements.append(buf)
                buf = ""

        def apply(conn: sqlite3.Connection) -> None:
            for statement in statements:
                conn.execute(statement)

        await self._run(apply)

    def migration_sql(self) -> str:
        return read_sql(__package__ or "conveyor.backends.sqlite", "schema.sql")

    # -- enqueue ----------------------------------------------------------------------
    @classmethod
    def _insert(
        cls, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
    ) -> list[EnqueueResult]:
        if len(jobs) > 1:
            return cls._insert_bulk(conn, jobs, now)
        return cls._insert_rows(conn, jobs, now)

    @staticmethod
    def _insert_bulk(
        conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
    ) -> list[EnqueueResult]:
        """One INSERT … SELECT for the batch (inside the caller's transaction)."""
        rows = json.dumps(
            [
                {
                    "name": j.name,
                    "channel": j.channel,
                    "payload": j.payload,
                    "state": j.state.value,
                    "priority": j.priority,
                    "run_at": j.run_at,
                    "max_attempts": j.max_attempts,
                    "tags": json.dumps(list(j.tags)) if j.tags else None,
                    "group_key": j.group,
                    "tenant": j.tenant,
                    "idempotency_key": j.idempotency_key,
                    "options": j.options,
                    "remove_on_complete": int(j.remove_on_complete),
                }
                for j in jobs
            ]
        )
        inserted = conn.execute(_Q["insert_jobs_bulk"], {"jobs": rows, "now": now}).fetchall()
        plain = iter(sorted(r[0] for r in inserted if r[2] is None))
        keyed = {(r[1] or "", r[2]): r[0] for r in inserted if r[2] is not None}
        seen: set[tuple[str, str]] = set()
        out: list[EnqueueResult] = []
        for job in jobs:
            if job.idempotency_key is None:
                out.append(EnqueueResult(next(plain), True))
                continue
            key = (job.tenant or "", job.idempotency_key)
            if key in keyed:
                out.append(EnqueueResult(keyed[key], key not in seen))
                seen.add(key)
                continue
            found = conn.execute(
                _Q["find_idempotent"],
                {"tenant": job.tenant, "idempotency_key": job.idempotency_key},
            ).fetchone()
            if found is None:
                raise BackendError("insert conflicted but no job holds its idempotency key")
            out.append(EnqueueResult(int(found[0]), False))
        return out

    @staticmethod
    def _insert_rows(
        conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
    ) -> list[EnqueueResult]:
        out: list[EnqueueResult] = []
        for job in jobs:
            row = conn.execute(
                _Q["insert_job"],
                {
                    "name": job.name,
                    "channel": job.channel,
                    "payload": job.payload,
                    "state": job.state.value,
                    "priority": job.priority,
                    "run_at": job.run_at,
                    "now": now,
                    "max_attempts": job.max_attempts,
                    "tags": json.dumps(list(job.tags)) if job.tags else None,
                    "group_key": job.group,
                    "tenant": job.tenant,
                    "idempotency_key": job.idempotency_key,
                    "options": job.options,
                    "remove_on_complete": int(job.remove_on_complete),
                },
            ).fetchone()
            if row is None:  # idempotency key taken: hand back the first job's id
                found = conn.execute(
                    _Q["find_idempotent"],
                    {"tenant": job.tenant, "idempotency_key": job.idempotency_key},
                ).fetchone()
                if found is None:
                    raise BackendError("insert conflicted but no job holds its idempotency key")
                out.append(EnqueueResult(int(found[0]), False))
                continue
            out.append(EnqueueResult(int(row[0]), True))  # the trigger stored "enqueued"
        return out

    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        if params.connection is not None:
            return self._enqueue_in(params)
        # One job is one autocommit INSERT (atomic by itself); several share a transaction.
        single = len(params.jobs) == 1
        result = await self._run(
            lambda c: self._insert(c, params.jobs, params.now), write=not single
        )
        self.wake()
        return result

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        if params.connection is not None:
            return self._enqueue_in(params)
        single = len(params.jobs) == 1
        result = self._run_sync(
            lambda c: self._insert(c, params.jobs, params.now), write=not single
        )
        self.wake()
        return result

    def _enqueue_in(self, params: EnqueueParams) -> list[EnqueueResult]:
        """Insert inside the caller's open transaction; they commit or roll back."""
        conn = params.connection
        if not isinstance(conn, sqlite3.Connection):
            raise ValidationError(
                f"connection= must be a sqlite3.Connection for a SQLite queue, got {type(conn).__name__}"
            )
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")
            # The caller's connection may lack our row factory: read columns by index only.
            return self._insert(conn, params.jobs, params.now)
        except sqlite3.Error as exc:
            raise BackendError(f"enqueue in the caller's transaction failed: {exc}") from exc

    # -- hot path ----------------------------------------------------------------------
    async def claim(self, params: ClaimParams) -> list[ClaimedJob]:
        return await self._run(self._claim_tx(params))

    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        applied, wake = await self._run(self._complete_tx(outcomes))
        if wake:
            self.wake()
        return applied

    async def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """Both in one write transaction: one lock, one commit."""
        complete, take = self._complete_tx(outcomes), self._claim_tx(claim)

        def tx(conn: sqlite3.Connection) -> tuple[list[bool], bool, list[ClaimedJob]]:
            applied, wake = complete(conn)
            return applied, wake, take(conn)

        applied, wake, jobs = await self._run(tx)
        if wake:  # the claim saw them, but it may have filtered them out (names, channels)
            self.wake()
        return applied, jobs

    @staticmethod
    def _claim_tx(params: ClaimParams) -> Callable[[sqlite3.Connection], list[ClaimedJob]]:
        def tx(conn: sqlite3.Connection) -> list[ClaimedJob]:
            if params.limit <= 0:
                return []
            args = {
                "now": params.now,
                "channels": json.dumps(params.channels) if params.channels is not None else None,
                "include": json.dumps(params.include) if params.include is not None else None,
                "exclude": json.dumps(params.exclude) if params.exclude is not None else None,
                "scan": params.limit * 2 if params.limit < 50 else params.limit + 50,
            }
            ids: list[int] = []
            groups: set[str] = set()
            for row in conn.execute(_Q["claim_candidates"], args):
                group = row[1]
                if group is not None:
                    if group in groups:
                        continue  # at most one job per group in a batch
                    groups.add(group)
                ids.append(row[0])
                if len(ids) >= params.limit:
                    break
            if not ids:
                return []
            id_json = json.dumps(ids)
            rows = conn.execute(
                _Q["claim_mark"],
                {
                    "ids": id_json,
                    "token": params.token,
                    "lease_expires_at": params.lease_expires_at,
                    "now": params.now,
                    "worker_id": params.worker_id,
                },
            ).fetchall()
            conn.execute(_Q["claim_events"], {"ids": id_json, "now": params.now})
            claimed = [
                ClaimedJob(
                    id=r["id"],
                    name=r["name"],
                    payload=r["payload"],
                    attempts=r["attempts"],
                    max_attempts=r["max_attempts"],
                    channel=r["channel"],
                    priority=r["priority"],
                    tenant=r["tenant"],
                    group=r["group_key"],
                    tags=tuple(json.loads(r["tags"])) if r["tags"] else (),
                    options=r["options"],
                    run_at=r["run_at"],
                    created_at=r["created_at"],
                    token=params.token,
                    remove_on_complete=bool(r["remove_on_complete"]),
                )
                for r in rows
            ]
            claimed.sort(key=lambda j: (j.priority, j.run_at, j.id))
            return claimed

        return tx

    @staticmethod
    def _complete_tx(
        outcomes: Sequence[Outcome],
    ) -> Callable[[sqlite3.Connection], tuple[list[bool], bool]]:
        """The transaction of ``complete_many``: (applied per outcome, whether a job
        went back to the queue or freed its group, so that waiting workers should look
        again)."""
        batch = json.dumps(
            [
                {
                    "id": o.job_id,
                    "token": o.token,
                    "state": o.state.value,
                    "result": o.result,
                    "error": o.error,
                    "refund": 1 if o.refund_attempt else 0,
                    "run_at": o.run_at,
                    "at": o.at,
                    "expired_before": o.expired_before,
                }
                for o in outcomes
                if not o.remove
            ]
        )
        removals = [o for o in outcomes if o.remove]

        def tx(conn: sqlite3.Connection) -> tuple[list[bool], bool]:
            rows = conn.execute(_Q["finish_many"], {"outcomes": batch}).fetchall()
            done: dict[int, tuple[str, str | None, int]] = {r[0]: (r[1], r[2], r[3]) for r in rows}
            freed = any(r[4] is not None for r in rows)
            for o in removals:
                args = {"job_id": o.job_id, "token": o.token, "expired_before": o.expired_before}
                row = conn.execute(_Q["finish_remove"], args).fetchone()
                if row is not None:
                    conn.execute(_Q["delete_job_children"], {"job_id": o.job_id})
                    done[o.job_id] = (row[0], row[1], row[2])
                    freed = freed or row[3] is not None
            events = []
            for o in outcomes:
                hit = done.get(o.job_id)
                if hit is not None:
                    events.append(
                        {
                            "job_id": o.job_id,
                            "type": o.event,
                            "job_name": hit[0],
                            "tenant": hit[1],
                            "attempt": hit[2] + (1 if o.refund_attempt else 0),
                            "at": o.at,
                            "data": o.event_data,
                        }
                    )
            conn.executemany(_Q["insert_event"], events)
            requeued = any(
                o.state in (JobState.QUEUED, JobState.SCHEDULED) and o.job_id in done
                for o in outcomes
            )
            return [o.job_id in done for o in outcomes], freed or requeued

        return tx

    async def heartbeat(self, params: HeartbeatParams) -> HeartbeatResult:
        if not params.jobs:
            return HeartbeatResult(frozenset(), frozenset())
        ids = [job_id for job_id, _ in params.jobs]
        tokens = {str(job_id): token for job_id, token in params.jobs}

        def tx(conn: sqlite3.Connection) -> HeartbeatResult:
            rows = conn.execute(
                _Q["heartbeat"],
                {
                    "ids": json.dumps(ids),
                    "tokens": json.dumps(tokens),
                    "lease_expires_at": params.lease_expires_at,
                },
            ).fetchall()
            held = {r[0] for r in rows}
            return HeartbeatResult(
                lost=frozenset(set(ids) - held),
                cancel_requested=frozenset(r[0] for r in rows if r[1]),
            )

        return await self._run(tx)

    async def cancel_requests(self, job_ids: Sequence[int]) -> frozenset[int]:
        if not job_ids:
            return frozenset()
        rows = await self._run(
            lambda c: c.execute(
                _Q["cancel_requests"], {"ids": json.dumps(list(job_ids))}
            ).fetchall(),
            write=False,
        )
        return frozenset(r[0] for r in rows)

    async def set_progress(self, job_id: int, token: str, progress: int, now: float) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                _Q["set_progress"], {"job_id": job_id, "token": token, "progress": progress}
            ).fetchone()
            if row is None:
                return False
            _store_event(conn, job_id, "progress", row, row[2], now, {"progress": progress})
            return True

        return await self._run(tx)

    async def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "job_id": e.job_id,
                "at": e.at,
                "level": e.level,
                "message": e.message,
                "attempt": e.attempt,
            }
            for e in entries
        ]
        await self._run(lambda c: c.executemany(_Q["insert_log"], rows) and None)

    # -- wake-ups ----------------------------------------------------------------------
    def wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _changed(self) -> bool:
        """Did another connection commit since we last looked? (cheap: shared memory)."""
        conn = self._conn
        if conn is None:
            return False
        with self._lock:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return bool(changed)

    async def wait_for_work(
        self, timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        self._changed()
        while True:
            if self._wake.is_set():
                self._wake.clear()
                self._last_activity = time.monotonic()
                return []  # no hand-off: the caller claims
            now = time.monotonic()
            if now >= deadline:
                return []
            # Poll fast right after activity, slower when the queue has been idle a while.
            step = 0.002 if now - self._last_activity < 2.0 else 0.02
            try:
                await asyncio.wait_for(self._wake.wait(), min(step, deadline - now))
            except TimeoutError:
                pass
            if self._changed():
                self._last_activity = time.monotonic()
                return []

    # -- maintenance --------------------------------------------------------------------
    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]:
        rows = await self._run(
            lambda c: c.execute(_Q["expired_leases"], {"now": now, "limit": limit}).fetchall(),
            write=False,
        )
        return [
            ExpiredLease(
                id=r["id"],
                token=r["lease_token"],
                name=r["name"],
                tenant=r["tenant"],
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
                options=r["options"],
                cancel_requested=bool(r["cancel_requested"]),
            )
            for r in rows
        ]

    async def promote_due(self, now: float, horizon: float, limit: int) -> tuple[int, float | None]:
        rows = await self._run(
            lambda c: c.execute(
                _Q["promote_due"], {"until": now + horizon, "limit": limit}
            ).fetchall()
        )
        if rows:
            self.wake()
        future = [r[0] for r in rows if r[0] > now]
        return len(rows), (min(future) if future else None)

    async def prune(self, state: JobState, finished_before: float, limit: int) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    _Q["prune_ids"],
                    {"state": state.value, "before": finished_before, "limit": limit},
                )
            ]
            if ids:
                args = {"ids": json.dumps(ids)}
                conn.execute(_Q["delete_events_of"], args)
                conn.execute(_Q["delete_logs_of"], args)
                conn.execute(_Q["delete_jobs"], args)
            conn.execute(_Q["prune_orphan_events"], {"before": finished_before, "limit": limit})
            return len(ids)

        return await self._run(tx)

    async def acquire_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        row = await self._run(
            lambda c: c.execute(
                _Q["acquire_lock"],
                {"name": name, "owner": owner, "expires_at": now + ttl, "now": now},
            ).fetchone()
        )
        return row is not None

    async def release_lock(self, name: str, owner: str) -> None:
        await self._run(lambda c: c.execute(_Q["release_lock"], {"name": name, "owner": owner}))

    # -- inspection and management ------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        row = await self._run(
            lambda c: c.execute(_Q["get_job"], {"job_id": job_id}).fetchone(), write=False
        )
        return None if row is None else job_from_row(dict(row))

    @staticmethod
    def _filter_args(flt: JobFilter, upcoming: bool = False) -> dict[str, Any]:
        return {
            "state": flt.state.value if flt.state is not None else None,
            "name": flt.name,
            "channel": flt.channel,
            "tenant": flt.tenant,
            "before_id": flt.before_id,
            "tags": json.dumps(list(flt.tags)) if flt.tags is not None else None,
            "tag_mode": flt.tag_mode,
            "limit": flt.limit,
            "upcoming": int(upcoming),
        }

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        rows = await self._run(
            lambda c: c.execute(_Q["list_jobs"], self._filter_args(flt)).fetchall(), write=False
        )
        return [job_from_row(dict(r)) for r in rows]

    async def counts(self, channel: str | None) -> dict[str, int]:
        rows = await self._run(
            lambda c: c.execute(_Q["counts"], {"channel": channel}).fetchall(), write=False
        )
        out = {s.value: 0 for s in JobState}
        out.update({r[0]: r[1] for r in rows})
        return out

    async def channel_stats(self) -> list[ChannelStats]:
        rows = await self._run(lambda c: c.execute(_Q["channel_stats"]).fetchall(), write=False)
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for r in rows:
            counts.setdefault(r["channel"], {})[r["state"]] = r["n"]
            if r["oldest"] is not None:
                oldest[r["channel"]] = r["oldest"]
        return [ChannelStats(ch, c, oldest.get(ch)) for ch, c in sorted(counts.items())]

    def _cancel_one(self, conn: sqlite3.Connection, job_id: int, now: float) -> str:
        row = conn.execute(_Q["cancel_upcoming"], {"job_id": job_id, "now": now}).fetchone()
        if row is not None:
            _store_event(conn, job_id, "cancelled", row, row[2], now)
            return CancelOutcome.CANCELLED
        if conn.execute(_Q["cancel_running"], {"job_id": job_id}).fetchone() is not None:
            return CancelOutcome.REQUESTED
        state = conn.execute(_Q["job_state"], {"job_id": job_id}).fetchone()
        return CancelOutcome.MISSING if state is None else CancelOutcome.FINISHED

    async def cancel(self, job_id: int, now: float) -> str:
        return await self._run(lambda c: self._cancel_one(c, job_id, now))

    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            args = self._filter_args(flt, upcoming=True)
            args["limit"] = -1
            ids = [r["id"] for r in conn.execute(_Q["list_jobs"], args)]
            return sum(self._cancel_one(conn, i, now) == CancelOutcome.CANCELLED for i in ids)

        return await self._run(tx)

    async def retry(self, job_id: int, now: float) -> str:
        def tx(conn: sqlite3.Connection) -> str:
            row = conn.execute(_Q["retry"], {"job_id": job_id, "now": now}).fetchone()
            if row is not None:
                _store_event(conn, job_id, "enqueued", row, 0, now, {"retry": True})
                return RetryOutcome.OK
            state = conn.execute(_Q["job_state"], {"job_id": job_id}).fetchone()
            return RetryOutcome.MISSING if state is None else str(state[0])

        result = await self._run(tx)
        self.wake()
        return result

    async def set_paused(self, channel: str | None, paused: bool) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if paused:
                conn.execute(_Q["pause"], {"channel": channel if channel is not None else ""})
            elif channel is None:
                conn.execute(_Q["resume_all"])
            else:
                conn.execute(_Q["resume"], {"channel": channel})

        await self._run(tx)
        if not paused:
            self.wake()

    async def paused_channels(self) -> frozenset[str]:
        rows = await self._run(lambda c: c.execute(_Q["paused"]).fetchall(), write=False)
        return frozenset(r[0] for r in rows)

    async def get_logs(self, job_id: int) -> list[LogRecord]:
        rows = await self._run(
            lambda c: c.execute(_Q["get_logs"], {"job_id": job_id}).fetchall(), write=False
        )
        return [log_from_row(dict(r)) for r in rows]

    async def get_events(self, job_id: int) -> list[Event]:
        rows = await self._run(
            lambda c: c.execute(_Q["get_events"], {"job_id": job_id}).fetchall(), write=False
        )
        return [event_from_row(dict(r)) for r in rows]

    async def read_events(
        self, after: str | None, limit: int, timeout: float
    ) -> tuple[list[Event], str]:
        # The cursor is "<last event id>:<last job id>": stored events, plus each new
        # job's "enqueued" event read from its row (see schema.sql).
        if after is None:
            row = await self._run(lambda c: c.execute(_Q["max_event_id"]).fetchone(), write=False)
            return [], f"{row[0]}:{row[1]}"
        ev_part, _, job_part = after.partition(":")
        ev_cursor, job_cursor = int(ev_part), int(job_part or 0)
        deadline = time.monotonic() + timeout

        def read(c: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            args = {"limit": limit}
            events = c.execute(_Q["read_events"], {**args, "after": ev_cursor}).fetchall()
            jobs = c.execute(_Q["read_enqueued"], {**args, "after": job_cursor}).fetchall()
            return events, jobs

        while True:
            events, jobs = await self._run(read, write=False)
            if events or jobs or time.monotonic() >= deadline:
                if events:
                    ev_cursor = events[-1]["id"]
                if jobs:
                    job_cursor = jobs[-1]["id"]
                merged = sorted(
                    [event_from_row(dict(r)) for r in (*jobs, *events)],
                    key=lambda e: (e.at, e.type != "enqueued"),
                )
                return merged, f"{ev_cursor}:{job_cursor}"
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    # -- cron ----------------------------------------------------------------------------
    @staticmethod
    def _cron_args(r: CronRecord) -> dict[str, Any]:
        return {
            "name": r.name,
            "expression": r.expression,
            "job": r.job,
            "payload": r.payload,
            "timezone": r.timezone,
            "paused": int(r.paused),
            "allow_overlap": int(r.allow_overlap),
            "catch_up": r.catch_up,
            "options": r.options,
            "next_run_at": r.next_run_at,
            "last_run_at": r.last_run_at,
            "last_job_id": r.last_job_id,
        }

    async def upsert_cron(self, record: CronRecord) -> None:
        await self._run(lambda c: c.execute(_Q["upsert_cron"], self._cron_args(record)))

    async def list_cron(self) -> list[CronRecord]:
        rows = await self._run(lambda c: c.execute(_Q["list_cron"]).fetchall(), write=False)
        return [
            CronRecord(
                name=r["name"],
                expression=r["expression"],
                job=r["job"],
                payload=r["payload"],
                timezone=r["timezone"],
                paused=bool(r["paused"]),
                allow_overlap=bool(r["allow_overlap"]),
                catch_up=r["catch_up"],
                options=r["options"],
                next_run_at=r["next_run_at"],
                last_run_at=r["last_run_at"],
                last_job_id=r["last_job_id"],
            )
            for r in rows
        ]

    async def delete_cron(self, names: Sequence[str]) -> int:
        cur = await self._run(
            lambda c: c.execute(_Q["delete_cron"], {"names": json.dumps(list(names))})
        )
        return int(cur.rowcount)

    async def set_cron_paused(self, name: str, paused: bool, next_run_at: float | None) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                _Q["set_cron_paused"],
                {"name": name, "paused": int(paused), "next_run_at": next_run_at},
            )
        )
        return bool(cur.rowcount)

    async def fire_cron(self, fire: CronFire) -> tuple[bool, int | None]:
        def tx(conn: sqlite3.Connection) -> tuple[bool, int | None]:
            cur = conn.execute(
                _Q["cron_cas"],
                {
                    "name": fire.name,
                    "new_next": fire.new_next,
                    "tick": fire.tick,
                    "expected_next": fire.expected_next,
                },
            )
            if cur.rowcount != 1:
                return False, None
            if fire.job is None:
                return True, None
            result = self._insert(conn, [fire.job], fire.now)[0]
            conn.execute(_Q["cron_set_last_job"], {"name": fire.name, "job_id": result.id})
            return True, result.id

        won = await self._run(tx)
        if won[1] is not None:
            self.wake()
        return won
