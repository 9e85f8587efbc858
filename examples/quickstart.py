"""conveyor's quickstart: a worker on the embedded SQLite default processing real jobs.

Run it (after `pip install -e .`):

    python examples/quickstart.py

It enqueues a batch of example jobs (some fail and retry, some are delayed, one reports
progress), runs a worker that prints every lifecycle event as it happens, and exits by
itself once every job has finished. The store is ./conveyor.db (CONVEYOR_URL overrides).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import timedelta

import conveyor

queue = conveyor.Queue()  # CONVEYOR_URL, else sqlite:///conveyor.db


@queue.job("send-welcome", channel="emails", attempts=3)
async def send_welcome(payload: dict, ctx: conveyor.Context) -> dict:
    """An async handler: pretend to call an email API."""
    await asyncio.sleep(random.uniform(0.05, 0.2))
    ctx.log.info("sent welcome mail to %s", payload["email"])
    return {"sent": True}


@queue.job("charge-card", attempts=4, backoff=conveyor.Backoff.exponential(0.3, max=2.0))
async def charge_card(payload: dict, ctx: conveyor.Context) -> dict:
    """Fails on its first two attempts (a flaky payment API), then succeeds."""
    if ctx.attempt <= 2:
        raise ConnectionError(f"payment gateway timed out (attempt {ctx.attempt})")
    return {"charged": payload["cents"]}


@queue.job("build-report", timeout=30)
async def build_report(payload: dict, ctx: conveyor.Context) -> dict:
    """Reports progress as it goes."""
    for step in range(1, 6):
        await asyncio.sleep(0.15)
        await ctx.set_progress(step * 20)
    return {"rows": 5 * 1000}


@queue.job("resize-image")
def resize_image(payload: dict, ctx: conveyor.Context) -> str:
    """A plain `def` handler runs in a worker thread."""
    time.sleep(0.05)
    return f"{payload['file']} resized to 256px"


@queue.job("validate-address")
async def validate_address(payload: dict, ctx: conveyor.Context) -> None:
    """Never retries a bad address: Fatal fails the job at once."""
    if not payload["zip"].isdigit():
        raise conveyor.Fatal(f"invalid zip code {payload['zip']!r}")


# Colour only on a terminal (and never with NO_COLOR set): piped output stays plain text.
COLOUR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
COLOURS = {
    "completed": "\033[32m",
    "failed": "\033[31m",
    "retrying": "\033[33m",
    "started": "\033[36m",
}
RESET = "\033[0m" if COLOUR else ""


def show(event: conveyor.Event) -> None:
    colour = COLOURS.get(event.type, "") if COLOUR else ""
    detail = ""
    if event.type == "progress":
        detail = f" {event.data['progress']}%"
    elif event.type in ("retrying", "failed") and "error" in event.data:
        detail = f" ({event.data['error']['message']})"
    elif event.type == "completed" and "result" in event.data:
        detail = f" -> {event.data['result']}"
    print(
        f"{colour}{event.type:>9}{RESET}  #{event.job_id:<5} {event.job_name:<16} attempt {event.attempt}{detail}"
    )


async def main() -> None:
    queue.on("*", show)
    await queue.migrate()
    await queue.enqueue_many(
        [conveyor.JobSpec("send-welcome", {"email": f"user{i}@example.com"}) for i in range(5)]
        + [conveyor.JobSpec("charge-card", {"cents": 1999}, priority=-1)]
        + [conveyor.JobSpec("build-report", {"month": "2026-11"}, delay=timedelta(seconds=1))]
        + [conveyor.JobSpec("resize-image", {"file": f"photo{i}.jpg"}, delay=0.5) for i in range(3)]
        + [conveyor.JobSpec("validate-address", {"zip": "12A45"})]
    )
    worker = queue.worker(concurrency=5)
    runner = asyncio.create_task(worker.run())
    while True:  # exit by ourselves once nothing is upcoming or running
        await asyncio.sleep(0.2)
        counts = await queue.counts()
        if counts["queued"] + counts["scheduled"] + counts["running"] == 0:
            break
    await worker.stop()
    await runner
    print("\nall done:", {k: v for k, v in (await queue.counts()).items() if v})
    await queue.close()


if __name__ == "__main__":
    asyncio.run(main())
