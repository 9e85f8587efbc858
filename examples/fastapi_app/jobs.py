"""The queue and its jobs, imported by the web app (to enqueue) and the worker (to run).

conveyor worker examples.fastapi_app.jobs:queue
"""

from __future__ import annotations

from typing import Any

import conveyor

# CONVEYOR_URL picks the store (sqlite:///jobs.db, postgresql://…, redis://…). Without
# it the queue is dormant: enqueue raises QueueDormant and no status route is mounted.
queue = conveyor.Queue.from_env()


@queue.job("send-welcome", channel="emails", attempts=3)
async def send_welcome(payload: dict[str, Any], ctx: conveyor.Context) -> dict[str, Any]:
    # At-least-once: a job may run again after a crash, so sending must be idempotent
    # (here: the mail provider dedupes on the idempotency key we give it).
    ctx.log.info("sending the welcome mail to %s", payload["email"])
    await ctx.set_progress(100)
    return {"sent_to": payload["email"], "template": "welcome"}
