"""The SQLite backend: stdlib ``sqlite3``, WAL, ``BEGIN IMMEDIATE``, ``UPDATE … RETURNING``.

Writers are serialised by SQLite itself. The connection runs with ``busy_timeout=0`` and
the backend retries ``SQLITE_BUSY`` with short asynchronous sleeps (up to
``BUSY_TIMEOUT``), so a worker waiting for another process's write lock never blocks its
event loop and users never see "database is locked". Each transaction is a short
synchronous block, so one connection, opened on first use, serves every event loop and
thread of the process under a ``threading.Lock``; ``enqueue_many_sync`` runs in the
calling thread, with or without an event loop.

Wake-ups: an in-process signal (``wake()``), and ``PRAGMA data_version`` (which changes
when another connection commits) polled every few milliseconds while idle.

``SQLiteBackend`` is assembled from one part per concern, each over the shared
connection:

- ``connection.py``: opening, busy-retried transactions, the schema, wake-up plumbing;
- ``wakeups.py``: ``wake()`` and the idle poll of ``wait_for_work``;
- ``enqueue.py``: inserts (single, batch, inside the caller's transaction);
- ``hotpath.py``: claim, complete, heartbeat, progress, logs;
- ``maintenance.py``: expired leases, promotion, retention, named locks;
- ``manage.py``: inspection, cancel, retry, pause;
- ``events.py``: stored events, a job's history, the event stream;
- ``operations.py``: the worker registry, the pause state, throughput, deleting jobs;
- ``durable.py``: steps, tokens and resuming waiting jobs (the waits are outcomes);
- ``cron.py``: schedules and firing ticks;
- ``flow.py``: the claim under limits and fairness, and the stored channel limits;
- ``workflows.py``: dependencies, batches and uniqueness windows (``workflows.sql``).

The SQL is in ``queries.sql`` (named queries) and ``schema.sql``.
"""

from __future__ import annotations

from conveyor.backends.sqlite.cron import Cron
from conveyor.backends.sqlite.durable import Durable
from conveyor.backends.sqlite.enqueue import Enqueue
from conveyor.backends.sqlite.events import Events
from conveyor.backends.sqlite.flow import FlowControl
from conveyor.backends.sqlite.hotpath import HotPath
from conveyor.backends.sqlite.maintenance import Maintenance
from conveyor.backends.sqlite.manage import Management
from conveyor.backends.sqlite.operations import Operations
from conveyor.backends.sqlite.workflows import Workflows

__all__ = ["SQLiteBackend"]


class SQLiteBackend(
    Enqueue,
    HotPath,
    Maintenance,
    Management,
    Events,
    Durable,
    Cron,
    Operations,
    FlowControl,
    Workflows,
):
    """Backend on one SQLite file (or ``:memory:``), safe across worker processes."""

    name = "sqlite"
    supports_transactions = True  # connection=: a sqlite3.Connection, sync or async
    sync_enqueue = True  # enqueue_many_sync opens the connection itself, no loop needed
    shared_across_loops = True  # one connection behind a threading.Lock, loop-agnostic
    hands_off = False  # wait_for_work wakes the caller, who then claims
