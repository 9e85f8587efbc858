"""Built-in jobs every queue has, to schedule like any other job (compas-style).

- ``conveyor.cleanup``: deletes finished jobs past its own retention, given in the
  payload in seconds: ``{"completed": 3600, "failed": 2592000, "cancelled": 2592000}``
  (each optional; defaults to the queue's keep_completed / keep_failed).
- ``conveyor.insights``: logs (logger ``conveyor.insights`` and the job's own log) queue
  depth, the oldest queued job's age and failure counts per channel, and returns them.

    await queue.add_cron("hourly-cleanup", "0 * * * *", job="conveyor.cleanup",
                         payload={"completed": 3600})
    await queue.add_cron("insights", "*/5 * * * *", job="conveyor.insights")
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from conveyor.context import Context
from conveyor.retry import Fatal

if TYPE_CHECKING:
    from conveyor.queue import Queue

__all__ = ["CLEANUP", "INSIGHTS", "register_builtins"]

CLEANUP = "conveyor.cleanup"
INSIGHTS = "conveyor.insights"
log = logging.getLogger("conveyor.insights")


def register_builtins(queue: Queue) -> None:
    """Register the built-in jobs on ``queue`` (done by every Queue)."""

    @queue.job(CLEANUP, channel="conveyor")
    async def cleanup(payload: Any, ctx: Context) -> dict[str, int]:
        settings = queue.settings
        retention = {
            "completed": settings.keep_completed,
            "failed": settings.keep_failed,
            "cancelled": settings.keep_failed,
        }
        if payload is not None:
            if not isinstance(payload, dict) or set(payload) - set(retention):
                raise Fatal(f"cleanup payload must be a dict with keys {sorted(retention)}")
            for state, seconds in payload.items():
                if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                    raise Fatal(f"cleanup retention for {state!r} must be seconds >= 0")
                retention[state] = float(seconds)
        removed = {state: await queue.clean(keep, state) for state, keep in retention.items()}
        ctx.log.info("removed %s", removed)
        return removed

    @queue.job(INSIGHTS, channel="conveyor")
    async def insights(payload: Any, ctx: Context) -> dict[str, Any]:
        backend = await queue._ready()
        now = queue.clock.now()
        report: dict[str, Any] = {}
        for stats in await backend.channel_stats():
            counts = stats.counts
            oldest = stats.oldest_queued_run_at
            entry = {
                "queued": counts.get("queued", 0),
                "scheduled": counts.get("scheduled", 0),
                "running": counts.get("running", 0),
                "failed": counts.get("failed", 0),
                "oldest_queued_age": round(max(0.0, now - oldest), 3)
                if oldest is not None
                else None,
            }
            report[stats.channel] = entry
            line = (
                f"channel={stats.channel} depth={entry['queued']} scheduled={entry['scheduled']} "
                f"running={entry['running']} failed={entry['failed']} "
                f"oldest_queued_age={entry['oldest_queued_age']}"
            )
            log.info(line)
            ctx.log.info(line)
        return report
