"""The JSON forms of jobs, events, logs and schedules, shared by the CLI and the web layer.

Pure: plain dicts of JSON types from :mod:`conveyor.models`, no I/O. ``conveyor jobs
show --json`` and the dashboard's job detail are the same :func:`job_detail`, so a script
and the browser see one shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.models import CronSchedule, Event, Job, LogRecord

__all__ = ["event_dict", "iso", "job_detail", "job_dict", "log_dict", "schedule_dict"]


def iso(value: datetime | None) -> str | None:
    """``value`` in ISO 8601, or None."""
    return value.isoformat() if value is not None else None


def job_dict(job: Job) -> dict[str, Any]:
    """The JSON form of a job (CLI ``--json``, web API)."""
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "payload": job.payload,
        "attempts": job.attempts,
        "stalls": job.stalls,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "result": job.result,
        "errors": list(job.errors),
        "last_error": job.last_error,
        "tags": list(job.tags),
        "group": job.group,
        "tenant": job.tenant,
        "channel": job.channel,
        "priority": job.priority,
        "run_at": iso(job.run_at),
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "wait_token": job.wait_token,
        "depends_on": list(job.depends_on),
        "steps": [{**step, "at": _iso_any(step.get("at"))} for step in job.steps],
        "tokens": [{k: _iso_any(v) for k, v in token.items()} for token in job.tokens],
    }


def _iso_any(value: Any) -> Any:
    """Datetimes as ISO 8601, tuples as lists, anything else as it is."""
    if isinstance(value, datetime):
        return value.isoformat()
    return list(value) if isinstance(value, tuple) else value


def event_dict(event: Event) -> dict[str, Any]:
    """One entry of a job's event timeline."""
    return {
        "type": event.type,
        "attempt": event.attempt,
        "at": iso(event.at),
        "data": dict(event.data),
    }


def log_dict(record: LogRecord) -> dict[str, Any]:
    """One line a handler logged with ``ctx.log``."""
    return {
        "at": iso(record.at),
        "level": record.level,
        "message": record.message,
        "attempt": record.attempt,
    }


def job_detail(job: Job, events: Sequence[Event], logs: Sequence[LogRecord]) -> dict[str, Any]:
    """Every field of a job (errors with tracebacks) plus its ``events`` and ``logs``."""
    out = job_dict(job)
    out["events"] = [event_dict(e) for e in events]
    out["logs"] = [log_dict(r) for r in logs]
    return out


def schedule_dict(schedule: CronSchedule) -> dict[str, Any]:
    """The JSON form of a cron schedule (without its payload)."""
    return {
        "name": schedule.name,
        "expression": schedule.expression,
        "job": schedule.job,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "allow_overlap": schedule.allow_overlap,
        "next_run_at": iso(schedule.next_run_at),
        "last_run_at": iso(schedule.last_run_at),
    }
