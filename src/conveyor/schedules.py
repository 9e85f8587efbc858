"""The cron half of the public :class:`conveyor.Queue`: add, edit, run, list, pause,
resume, remove and sync schedules. A mixin, so ``queue.py`` stays a short façade; every
method forwards to :mod:`conveyor.cron` with the queue's engine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from conveyor import cron
from conveyor.engine import Engine
from conveyor.errors import ValidationError
from conveyor.models import CronSchedule, CronSpec

__all__ = ["CronMethods"]


class CronMethods:
    """Schedules (DESIGN.md "Cron"): each method is part of :class:`conveyor.Queue`."""

    engine: Engine

    async def add_cron(
        self,
        name: str,
        expression: str | None = None,
        *,
        job: str | None = None,
        payload: Any = None,
        timezone: str = "UTC",
        every: timedelta | None = None,
        allow_overlap: bool = False,
        catch_up: timedelta | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        backoff: Any = None,
    ) -> CronSchedule:
        """Create or update a schedule that enqueues ``job`` (default: ``name``) on every
        tick of the cron ``expression`` in ``timezone`` (or ``every=timedelta``). An
        invalid expression or zone raises ValidationError and stores nothing."""
        spec = CronSpec(
            name,
            expression,
            job=job,
            payload=payload,
            timezone=timezone,
            every=every,
            allow_overlap=allow_overlap,
            catch_up=catch_up,
            priority=priority,
            attempts=attempts,
            backoff=backoff,
        )
        (record,) = await cron.upsert(self.engine, [spec])
        return record.to_schedule()

    async def list_cron(self, paused: bool | None = None) -> list[CronSchedule]:
        """Every stored schedule (``paused=True``: only paused ones; ``False``: active)."""
        if paused is not None and not isinstance(paused, bool):
            raise ValidationError(f"paused must be True, False or None, got {paused!r}")
        return await cron.list_schedules(self.engine, paused)

    async def edit_cron(
        self,
        name: str,
        expression: str | None = cron.KEEP,
        *,
        job: str = cron.KEEP,
        payload: Any = cron.KEEP,
        timezone: str = cron.KEEP,
        every: timedelta | None = cron.KEEP,
        allow_overlap: bool = cron.KEEP,
        catch_up: timedelta | None = cron.KEEP,
        priority: int | None = cron.KEEP,
        attempts: int | None = cron.KEEP,
        backoff: Any = cron.KEEP,
    ) -> CronSchedule:
        """Change only what is given of schedule ``name`` (``add_cron`` replaces the whole
        schedule). A new expression, interval or zone takes effect at once; a paused
        schedule stays paused.

        Raises:
            ValidationError: no such schedule, or an invalid value (nothing is changed).
        """
        changes = {k: v for k, v in locals().items() if k not in ("self", "name")}
        return (await cron.edit(self.engine, name, changes)).to_schedule()

    async def run_cron(self, name: str) -> int:
        """Enqueue schedule ``name``'s job now, once (also when paused), without moving its
        next tick; returns the job's id.

        Raises:
            ValidationError: no such schedule.
        """
        return await cron.run_now(self.engine, name)

    async def pause_cron(self, name: str) -> None:
        """Stop a schedule from firing (its pending jobs stay)."""
        await cron.set_paused(self.engine, name, True)

    async def resume_cron(self, name: str) -> None:
        """Resume a paused schedule from its next tick (missed ticks are not replayed)."""
        await cron.set_paused(self.engine, name, False)

    async def remove_cron(self, name: str) -> bool:
        """Delete a schedule (its pending jobs stay). False if there was none."""
        return await cron.remove(self.engine, name)

    async def sync_cron(self, specs: Sequence[CronSpec]) -> None:
        """Make the stored schedules exactly ``specs`` (plus those declared with
        ``@queue.job(cron=…)``): others are removed, their pending jobs stay."""
        await cron.sync(self.engine, specs)
