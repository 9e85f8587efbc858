"""The PostgreSQL backend (``pip install 'conveyor[postgres]'``): psycopg 3, async, pooled.

Using it
--------
``conveyor.Queue("postgresql://user:pass@host/db", schema="conveyor")`` keeps every table
in ``schema`` (created by ``queue.migrate()`` / ``conveyor migrate``; a DBA can review
and run ``conveyor migrate --sql`` instead, which is idempotent too).

URL query parameters ``pool_min_size`` (default 1), ``pool_max_size`` (10) and
``pool_timeout`` (seconds a call waits for a connection before it fails with
``BackendError``, 5) size the pool; every other parameter goes to libpq, which also gets
``connect_timeout=5``, TCP keepalives and ``application_name=conveyor`` unless the URL
says otherwise. Each backend also holds one connection of its own for LISTEN, so put it
on a direct (or session-pooling) connection, not a PgBouncer transaction pool.

Transactional enqueue
---------------------
Pass your open transaction's connection and the job commits or rolls back with it::

    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders …")
            await queue.enqueue("send-receipt", {"order": 1}, connection=conn)

``enqueue_sync(…, connection=conn)`` takes a sync ``psycopg.Connection``. SQLAlchemy on
the psycopg driver works too: pass ``session.connection()`` (or an ``AsyncConnection``,
``await async_session.connection()``); the backend unwraps it to the DBAPI connection
(``sa_conn.connection.driver_connection``) and runs the insert inside SQLAlchemy's
transaction. Until the commit no worker sees the job; the wake-up NOTIFY is delivered
at commit; after a rollback the job (and its idempotency key) never existed.
"""

from __future__ import annotations

__all__: list[str] = []
