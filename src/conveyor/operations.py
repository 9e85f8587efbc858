"""The operations half of the public :class:`conveyor.Queue`: workers, channels with their
pause state and limits, throughput over time, deleting jobs, and bulk actions by filter. A mixin, so
``queue.py`` stays a short façade; what the dashboard, the CLI and the MCP server show
comes from here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import ChannelLimitRecord, JobFilter, RetryOutcome, ThroughputParams
from conveyor.clock import from_ts
from conveyor.durations import Duration, parse_duration
from conveyor.engine import Engine
from conveyor.errors import InvalidStateError, ValidationError
from conveyor.limits import ChannelLimits, Rate
from conveyor.models import ChannelInfo, JobState, PauseState, ThroughputPoint, WorkerInfo
from conveyor.validation import job_filter, validate_name

__all__ = ["OperationsMethods"]

#: Jobs a bulk action handles per page (each page is one list and one write per job or
#: one write in all).
BULK_PAGE = 500


class OperationsMethods:
    """Each method is part of :class:`conveyor.Queue`."""

    engine: Engine

    async def workers(self) -> list[WorkerInfo]:
        """Workers running now (any process, any host), oldest first. A worker that died
        disappears once its lease has passed without a heartbeat."""
        backend = await self.engine.ready()
        records = await backend.list_workers(self.engine.clock.now())
        return [
            WorkerInfo(
                id=r.id, host=r.host, pid=r.pid, channels=r.channels,
                concurrency=r.concurrency, running=r.running,
                started_at=from_ts(r.started_at), last_seen=from_ts(r.last_seen),  # type: ignore[arg-type]
            )
            for r in records
        ]  # fmt: skip

    async def set_channel_limits(
        self,
        channel: str,
        *,
        concurrency: int | None = None,
        rate: Rate | None = None,
        fair_by: str | None = None,
    ) -> ChannelLimits:
        """Store ``channel``'s limits (all None: clear them): at most ``concurrency`` of its
        jobs running at once, at most ``rate`` starts (a :class:`conveyor.Rate` without a
        key), and its due jobs claimed round-robin across ``fair_by`` (``"tenant"`` or
        ``"group"``) values. Every running worker obeys within one sweep interval.

        Raises:
            ValidationError: a bad channel name or value (nothing is stored).
        """
        limits = ChannelLimits(validate_name(channel, "channel"), concurrency, rate, fair_by)
        record = ChannelLimitRecord(
            limits.channel,
            concurrency=limits.concurrency,
            rate_n=None if rate is None else rate.n,
            rate_per=None if rate is None else rate.seconds,
            fair_by=limits.fair_by,
        )
        backend = await self.engine.ready()
        await backend.set_channel_limits(record)
        await self.engine.refresh_limits(backend)
        return limits

    async def channel_limits(self) -> list[ChannelLimits]:
        """Every channel's stored limits, by channel."""
        records = await (await self.engine.ready()).list_channel_limits()
        return [_limits(r) for r in records]

    async def pause_state(self) -> PauseState:
        """What :meth:`pause` has paused: every channel, and channels by name."""
        state = await (await self.engine.ready()).paused_state()
        return PauseState(everything=state.everything, channels=tuple(sorted(state.channels)))

    async def channels(self) -> list[ChannelInfo]:
        """Every channel with jobs or a pause: its jobs per state, whether it is paused
        (by name or because everything is), and when its longest-waiting due job became
        due. Sorted by name."""
        backend = await self.engine.ready()
        stats = await backend.channel_stats()
        state = await backend.paused_state()
        limits = {r.channel: _limits(r) for r in await backend.list_channel_limits()}
        states = [s.value for s in JobState]
        out: dict[str, ChannelInfo] = {}
        for s in stats:
            counts = {k: int(s.counts.get(k, 0)) for k in states}
            out[s.channel] = ChannelInfo(
                name=s.channel, counts=counts,
                paused=state.everything or s.channel in state.channels,
                oldest_queued_at=from_ts(s.oldest_queued_run_at),
                limits=limits.get(s.channel),
            )  # fmt: skip
        for name in (state.channels | limits.keys()) - out.keys():
            paused = state.everything or name in state.channels
            out[name] = ChannelInfo(name, dict.fromkeys(states, 0), paused, None, limits.get(name))
        return [out[name] for name in sorted(out)]

    async def throughput(
        self, window: Duration = "1h", bucket: Duration = "1m"
    ) -> list[ThroughputPoint]:
        """Jobs that finished in the last ``window``, per ``bucket`` (oldest first, every
        bucket present): completed, failed and cancelled. Counted from the stored jobs,
        so jobs already removed (``remove_on_complete``, retention) do not count."""
        span = parse_duration(window, "window")
        step = parse_duration(bucket, "bucket")
        buckets = math.ceil(span / step)
        if buckets > 10_000:
            raise ValidationError(f"window / bucket gives {buckets} buckets; at most 10000")
        now = self.engine.clock.now()
        since = (math.floor(now / step) + 1) * step - buckets * step  # the last bucket holds now
        found = await (await self.engine.ready()).throughput(ThroughputParams(since, step, buckets))
        by_index = {b.index: b for b in found}
        points = []
        for i in range(buckets):
            b = by_index.get(i)
            points.append(
                ThroughputPoint(
                    start=from_ts(since + i * step),  # type: ignore[arg-type]
                    completed=b.completed if b else 0,
                    failed=b.failed if b else 0,
                    cancelled=b.cancelled if b else 0,
                )
            )
        return points

    async def delete(self, job_id: int) -> bool:
        """Delete one job that is not running, with its events, logs, steps and tokens
        (a ``removed`` event). False when there is no such job.

        Raises:
            InvalidStateError: the job is running (cancel it first).
        """
        backend = await self.engine.ready()
        job = await backend.get_job(int(job_id))
        if job is None:
            return False
        if job.state is JobState.RUNNING:
            raise InvalidStateError(f"job {job_id} is running: cancel it first, then delete it")
        removed = await backend.delete_jobs([job.id], self.engine.clock.now())
        self._announce_deleted(removed)
        return bool(removed)

    async def delete_jobs(
        self,
        state: JobState | str | None = None,
        name: str | None = None,
        channel: str | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: str = "any",
        tenant: str | None = None,
        name_prefix: str | None = None,
    ) -> int:
        """Delete every job matching the filters that is not running; the count."""
        return await self._bulk(
            self._delete_page, state, name, channel, tags, tag_mode, tenant, name_prefix
        )

    async def retry_jobs(
        self,
        state: JobState | str | None = "failed",
        name: str | None = None,
        channel: str | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: str = "any",
        tenant: str | None = None,
        name_prefix: str | None = None,
    ) -> int:
        """:meth:`retry` every failed or cancelled job matching the filters; the count."""
        return await self._bulk(
            self._retry_page, state, name, channel, tags, tag_mode, tenant, name_prefix
        )

    # -- helpers ----------------------------------------------------------------------------
    async def _bulk(self, page_action: Any, state: Any, name: Any, channel: Any, tags: Any,
                    tag_mode: str, tenant: Any, name_prefix: Any) -> int:  # fmt: skip
        flt = job_filter(state, name, channel, tags, tag_mode, tenant, BULK_PAGE, None, name_prefix)
        backend = await self.engine.ready()
        total = 0
        before: int | None = None
        while True:
            page = await backend.list_jobs(_page(flt, before))
            if not page:
                return total
            total += await page_action(backend, page)
            before = page[-1].id

    async def _delete_page(self, backend: Any, jobs: list[Any]) -> int:
        ids = [j.id for j in jobs if j.state is not JobState.RUNNING]
        removed = await backend.delete_jobs(ids, self.engine.clock.now()) if ids else []
        self._announce_deleted(removed)
        return len(removed)

    async def _retry_page(self, backend: Any, jobs: list[Any]) -> int:
        done = 0
        for job in jobs:
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                result = await backend.retry(job.id, self.engine.clock.now())
                done += result.outcome is RetryOutcome.RETRIED
        return done

    def _announce_deleted(self, removed: Sequence[Any]) -> None:
        for job in removed:
            self.engine.emit(
                "removed", job.id, job.name, job.tenant, job.attempts, {"reason": "delete"}
            )


def _limits(record: ChannelLimitRecord) -> ChannelLimits:
    rate = None
    if record.rate_n is not None and record.rate_per is not None:
        rate = Rate(record.rate_n, record.rate_per)
    return ChannelLimits(record.channel, record.concurrency, rate, record.fair_by)


def _page(flt: JobFilter, before: int | None) -> JobFilter:
    return dataclasses.replace(flt, before_id=before)
