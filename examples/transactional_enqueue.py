"""Transactional enqueue from sync code (the shape of a Django or Flask view) on SQLite.

    python examples/transactional_enqueue.py

The app keeps its own ``orders`` table in the same SQLite file as the queue. Placing an
order inserts the row and enqueues its confirmation mail in one transaction
(``connection=``): when the transaction rolls back, the job never existed; until it
commits, no worker sees it. The store is a temporary file, removed at the end.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

import conveyor


def place_order(db: sqlite3.Connection, queue: conveyor.Queue, item: str, fail: bool) -> int:
    """A sync "view": one transaction for the order row and its job."""
    try:
        with db:  # commits on success, rolls back on an exception
            order_id = db.execute("INSERT INTO orders (item) VALUES (?)", (item,)).lastrowid
            queue.enqueue_sync("confirm-order", {"order_id": order_id}, connection=db)
            if fail:
                raise RuntimeError("card declined")
        return 1
    except RuntimeError as exc:
        print(f"order for {item!r} rolled back: {exc}")
        return 0


async def run_worker(queue: conveyor.Queue) -> int:
    n = await queue.worker().run_once()  # process what is due now, then return
    await queue.close()
    return n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.db"
        queue = conveyor.Queue(f"sqlite:///{path}")

        @queue.job("confirm-order")
        def confirm_order(payload: dict, ctx: conveyor.Context) -> str:
            return f"confirmation sent for order {payload['order_id']}"

        # Create the queue's tables at start-up, before any transaction of yours is open:
        # the schema is written on the queue's own connection, which would otherwise wait
        # for your transaction's write lock.
        asyncio.run(queue.migrate())

        db = sqlite3.connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT)")
        db.commit()

        placed = place_order(db, queue, "teapot", fail=False)
        placed += place_order(db, queue, "kettle", fail=True)
        orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        db.close()

        ran = asyncio.run(run_worker(queue))
        print(f"orders placed: {placed}, rows in orders: {orders}, jobs run: {ran}")
        assert placed == orders == ran == 1


if __name__ == "__main__":
    main()
