"""A refund that waits for a human: durable steps, a token, a cooling-off sleep.

    python examples/durable_approval.py

The handler loads the order, asks for approval (here: prints the token; in an app: posts
it to Slack with a link to an endpoint that calls ``queue.complete_token``), then waits
without holding a worker slot. Order 1 is approved by a "human" task below; nobody answers
for order 2, so its token times out and the handler gets ``ok=False``. After approval the
refund waits out a cooling-off period (``ctx.sleep``), also holding nothing, then refunds.

Times are short so the demo runs in seconds; a real app uses ``timeout="48h"`` and
``ctx.sleep("1h")``. The store is a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import conveyor

ANSWER_WITHIN = "2s"  # "48h" in a real app
COOLING_OFF = "1s"  # "1h" in a real app
ORDERS = {1: 25, 2: 40}  # order id -> amount


def build_queue(path: Path) -> conveyor.Queue:
    queue = conveyor.Queue(f"sqlite:///{path}", sweep_interval=0.2)

    @queue.job("approve-refund", attempts=5)
    async def approve_refund(payload: dict[str, Any], ctx: conveyor.Context) -> dict[str, Any]:
        order = await ctx.step(
            "load", lambda: {"id": payload["order_id"], "amount": ORDERS[payload["order_id"]]}
        )
        token = await ctx.create_token(timeout=ANSWER_WITHIN, tags=["approval"])
        # A step, so a re-run (after the wait, or a crash) never asks twice.
        await ctx.step(
            "ask", lambda: print(f"ask: refund order {order['id']}? token {token.id[:8]}…")
        )
        decision = await ctx.wait_for_token(token)  # no worker slot held meanwhile
        if not decision.ok:
            return {"refunded": False, "reason": f"no answer in {ANSWER_WITHIN}"}
        await ctx.sleep(COOLING_OFF)  # durable: survives restarts, holds nothing
        amount = decision.data["amount"]
        await ctx.step("refund", lambda: print(f"refund: order {order['id']}, {amount} EUR"))
        return {"refunded": True, "amount": amount}

    return queue


async def human(queue: conveyor.Queue, job_id: int) -> None:
    """Approves one job once it waits on its token (a web endpoint would do this)."""
    while True:
        job = await queue.get_job(job_id)
        if job is not None and job.wait_token is not None:
            print(
                f"human: approving order 1 ({await queue.complete_token(job.wait_token, {'amount': 25})})"
            )
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        queue = build_queue(Path(tmp) / "refunds.db")
        async with queue:
            finished: set[int] = set()
            all_done = asyncio.Event()

            def on_completed(event: conveyor.Event) -> None:
                finished.add(event.job_id)
                if len(finished) == 2:
                    all_done.set()

            queue.on("completed", on_completed)
            approved = await queue.enqueue("approve-refund", {"order_id": 1})
            ignored = await queue.enqueue("approve-refund", {"order_id": 2})
            worker = queue.worker(concurrency=1)  # one slot is enough: waits hold none
            running = asyncio.create_task(worker.run())
            await human(queue, approved)
            await asyncio.wait_for(all_done.wait(), 30)
            await worker.stop()
            await running
            for job_id in (approved, ignored):
                job = await queue.get_job(job_id)
                assert job is not None
                print(f"order {job.payload['order_id']}: {job.result}")


if __name__ == "__main__":
    asyncio.run(main())
