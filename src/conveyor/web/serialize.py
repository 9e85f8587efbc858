"""The JSON forms of jobs, events and logs served by the web layer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.cli import job_dict
from conveyor.models import Event, Job, LogRecord

__all__ = ["job_detail", "job_status", "job_summary"]

STATUS_FIELDS = (
    "id",
    "name",
    "state",
    "attempts",
    "max_attempts",
    "progress",
    "result",
    "last_error",
    "created_at",
    "started_at",
    "finished_at",
    "tags",
)
SUMMARY_FIELDS = (
    "id",
    "name",
    "state",
    "attempts",
    "max_attempts",
    "progress",
    "tenant",
    "channel",
    "priority",
    "tags",
    "run_at",
    "created_at",
    "finished_at",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_status(job: Job) -> dict[str, Any]:
    """What ``GET {status_path}/{id}`` answers.

    The last error keeps its type and message but not its traceback: the status API
    faces tenants, and a traceback shows server code and paths. The dashboard (admins)
    shows the traceback.
    """
    full = job_dict(job)
    out = {key: full[key] for key in STATUS_FIELDS}
    if out["last_error"] is not None:
        out["last_error"] = {k: v for k, v in out["last_error"].items() if k != "traceback"}
    return out


def job_summary(job: Job) -> dict[str, Any]:
    """One row of the dashboard's job list (no payload, result or errors: lists stay small)."""
    full = job_dict(job)
    out = {key: full[key] for key in SUMMARY_FIELDS}
    last = job.last_error
    out["error"] = None if last is None else f"{last.get('type', '')}: {last.get('message', '')}"
    return out


def job_detail(job: Job, events: Sequence[Event], logs: Sequence[LogRecord]) -> dict[str, Any]:
    """The dashboard's job detail: every field, errors with tracebacks, events and logs."""
    out = job_dict(job)
    out["events"] = [
        {"type": e.type, "attempt": e.attempt, "at": _iso(e.at), "data": dict(e.data)}
        for e in events
    ]
    out["logs"] = [
        {"at": _iso(r.at), "level": r.level, "message": r.message, "attempt": r.attempt}
        for r in logs
    ]
    return out
