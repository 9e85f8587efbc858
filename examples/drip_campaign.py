"""A three-email drip campaign: each email a durable step, durable sleeps between them.

    python examples/drip_campaign.py

Each signup gets one job that sends a welcome email, sleeps, sends tips, sleeps, sends an
offer. While it sleeps the job is ``waiting``: no worker slot, no lease, no connection, so
100,000 signups in the middle of a campaign cost storage only. A worker restart in the
middle re-runs the handler from the top, and the sent emails replay from storage instead of
being sent again.

The gaps are short so the demo runs in seconds (a real campaign sleeps ``"2d"``). The
store is a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import conveyor

GAP = 0.5  # seconds between emails; "2d" in a real campaign
START = time.monotonic()


def send(email: str, subject: str) -> str:
    print(f"+{time.monotonic() - START:4.1f}s  {subject:<8} -> {email}")
    return subject


def build_queue(path: Path) -> conveyor.Queue:
    queue = conveyor.Queue(f"sqlite:///{path}", sweep_interval=0.1)

    @queue.job("drip")
    async def drip(payload: dict[str, Any], ctx: conveyor.Context) -> list[str]:
        email = payload["email"]
        sent = [await ctx.step("welcome", lambda: send(email, "welcome"))]
        await ctx.sleep(GAP)
        sent.append(await ctx.step("tips", lambda: send(email, "tips")))
        await ctx.sleep(GAP)
        sent.append(await ctx.step("offer", lambda: send(email, "offer")))
        return sent

    return queue


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with build_queue(Path(tmp) / "drip.db") as queue:
            emails = ("ada@example.com", "bob@example.com")
            all_done = asyncio.Event()
            finished: list[int] = []

            def on_completed(event: conveyor.Event) -> None:
                finished.append(event.job_id)
                if len(finished) == len(emails):
                    all_done.set()

            queue.on("completed", on_completed)
            ids = [await queue.enqueue("drip", {"email": e}) for e in emails]
            worker = queue.worker(concurrency=1)
            running = asyncio.create_task(worker.run())
            await asyncio.wait_for(all_done.wait(), 30)
            await worker.stop()
            await running
            for job_id in ids:
                job = await queue.get_job(job_id)
                assert job is not None
                print(
                    f"{job.payload['email']}: sent {job.result}, steps {[s['name'] for s in job.steps]}"
                )


if __name__ == "__main__":
    asyncio.run(main())
