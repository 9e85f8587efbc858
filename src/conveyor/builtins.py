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
from conveyor.definitions import Enqueuer, JobDefinition
from conveyor.models import JobState
from conveyor.retry import Fatal

if TYPE_CHECKING:
    from conveyor.engine import Engine

__all__ = ["CLEANUP", "INSIGHTS", "register_builtins"]

CLEANUP = "conveyor.cleanup"
INSIGHTS = "conveyor.insights"
log = logging.getLogger("conveyor.insights")


def register_builtins(engine: Engine, owner: Enqueuer) -> None:
    """Register the built-in jobs with ``engine`` (done by every Queue, ``owner``)."""

    async def cleanup(payload: Any, ctx: Context) -> dict[str, int]:
        settings = engine.settings
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
        now = engine.clock.now()
        removed = {
            state: await engine.prune(JobState(state), now - keep, "retention")
            for state, keep in retention.items()
        }
        ctx.log.info("removed %s", removed)
        return removed

    async def insights(payload: Any, ctx: Context) -> dict[str, Any]:
        backend = await engine.ready()
        now = engine.clock.now()
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

    for name, fn in ((CLEANUP, cleanup), (INSIGHTS, insights)):
        engine.register(JobDefinition(queue=owner, name=name, fn=fn, channel="conveyor"))
