"""Parameters in, rows out: how the PostgreSQL backend talks to its queries.

Batches travel as one JSON array per statement (read with ``json_to_recordset``);
rows come back as tuples in the column order of ``queries.sql``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import (
    ClaimedJob,
    CronRecord,
    ExpiredLease,
    JobFilter,
    LogEntry,
    NewJob,
    Outcome,
)
from conveyor.models import JobState

__all__ = [
    "NOTIFY_LIMIT",
    "claimed_job",
    "cron_args",
    "cron_record",
    "dedupe_keys",
    "expired_lease",
    "filter_args",
    "jobs_json",
    "logs_json",
    "notify_payload",
    "outcomes_json",
    "queued_channels",
]

NOTIFY_LIMIT = 4000  # bytes; NOTIFY allows < 8000, and a bigger payload says nothing new
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _no_nul(text: str) -> str:
    """PostgreSQL text cannot hold U+0000; user-written text (log lines) may."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _clean_json(text: str | None) -> str | None:
    """JSON text for a jsonb column: jsonb rejects the escape \\u0000, so strings that
    contain NUL are re-encoded with U+FFFD instead (only when one is present)."""
    if text is None or "\\u0000" not in text:
        return text

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return _no_nul(value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {_no_nul(k): scrub(v) for k, v in value.items()}
        return value

    try:
        return _DUMPS(scrub(json.loads(text)))
    except ValueError:
        return text


def dedupe_keys(jobs: Sequence[NewJob]) -> tuple[list[int], list[int]]:
    """Fold repeated idempotency keys inside one batch: returns the indexes to insert
    and, for every input, the index of the input whose result it shares."""
    first: dict[tuple[str, str], int] = {}
    unique: list[int] = []
    alias: list[int] = []
    for i, job in enumerate(jobs):
        if job.idempotency_key is None:
            unique.append(i)
            alias.append(i)
            continue
        key = (job.tenant or "", job.idempotency_key)
        if key in first:
            alias.append(first[key])
        else:
            first[key] = i
            unique.append(i)
            alias.append(i)
    return unique, alias


def jobs_json(jobs: Sequence[NewJob], indexes: Sequence[int]) -> str:
    """The enqueue batch (``i`` is the position in the caller's list)."""
    return _DUMPS(
        [
            {
                "i": i,
                "name": job.name,
                "payload": job.payload,
                "state": job.state.value,
                "run_at": job.run_at,
                "priority": job.priority,
                "channel": job.channel,
                "max_attempts": job.max_attempts,
                "options": job.options,
                "remove_on_complete": job.remove_on_complete,
                "idempotency_key": job.idempotency_key,
                "tags": list(job.tags),
                "group_key": job.group,
                "tenant": job.tenant,
            }
            for i in indexes
            for job in (jobs[i],)
        ]
    )


def notify_payload(channels: Counter[str]) -> str | None:
    """``{"channel": count}`` of newly due jobs (None: nothing to announce). Too many
    channels for one NOTIFY collapse to ``""``, which means "any channel"."""
    if not channels:
        return None
    text = _DUMPS(dict(channels))
    return text if len(text.encode()) <= NOTIFY_LIMIT else ""


def outcomes_json(outcomes: Sequence[Outcome]) -> str:
    return _DUMPS(
        [
            {
                "i": i,
                "id": o.job_id,
                "token": o.token,
                "state": o.state.value,
                "at": o.at,
                "event": o.event,
                "run_at": o.run_at,
                "result": o.result,
                "error": _clean_json(o.error),
                "refund": o.refund_attempt,
                "remove": o.remove,
                "expired_before": o.expired_before,
                "data": o.event_data,
            }
            for i, o in enumerate(outcomes)
        ]
    )


def logs_json(entries: Sequence[LogEntry]) -> str:
    return _DUMPS(
        [
            {
                "i": i,
                "job_id": e.job_id,
                "at": e.at,
                "level": _no_nul(e.level),
                "message": _no_nul(e.message),
                "attempt": e.attempt,
            }
            for i, e in enumerate(entries)
        ]
    )


def filter_args(flt: JobFilter) -> dict[str, Any]:
    return {
        "state": flt.state.value if flt.state is not None else None,
        "name": flt.name,
        "channel": flt.channel,
        "tenant": flt.tenant,
        "before_id": flt.before_id,
        "tags": list(flt.tags) if flt.tags is not None else None,
        "tag_mode": flt.tag_mode,
        "limit": flt.limit,
    }


def claimed_job(row: Sequence[Any], token: str) -> ClaimedJob:
    """A row of ``claim``."""
    return ClaimedJob(
        id=row[0],
        name=row[1],
        payload=row[2],
        attempts=row[3],
        max_attempts=row[4],
        channel=row[5],
        priority=row[6],
        tenant=row[7],
        group=row[8],
        tags=tuple(row[9]),
        options=row[10],
        run_at=row[11],
        created_at=row[12],
        token=token,
        remove_on_complete=row[13],
    )


def expired_lease(row: Sequence[Any]) -> ExpiredLease:
    """A row of ``expired_leases``."""
    return ExpiredLease(
        id=row[0],
        token=row[1],
        name=row[2],
        tenant=row[3],
        attempts=row[4],
        max_attempts=row[5],
        options=row[6],
        cancel_requested=row[7],
    )


def cron_args(r: CronRecord) -> dict[str, Any]:
    return {
        "name": r.name,
        "expression": r.expression,
        "job": r.job,
        "payload": r.payload,
        "timezone": r.timezone,
        "paused": r.paused,
        "allow_overlap": r.allow_overlap,
        "catch_up": r.catch_up,
        "options": r.options,
        "next_run_at": r.next_run_at,
        "last_run_at": r.last_run_at,
        "last_job_id": r.last_job_id,
    }


def cron_record(row: Sequence[Any]) -> CronRecord:
    """A row of ``list_cron``."""
    return CronRecord(
        name=row[0],
        expression=row[1],
        job=row[2],
        payload=row[3],
        timezone=row[4],
        paused=row[5],
        allow_overlap=row[6],
        catch_up=row[7],
        options=row[8],
        next_run_at=row[9],
        last_run_at=row[10],
        last_job_id=row[11],
    )


def queued_channels(jobs: Sequence[NewJob], indexes: Sequence[int]) -> Counter[str]:
    """Channels (with counts) of the jobs in the batch that are due now."""
    return Counter(jobs[i].channel for i in indexes if jobs[i].state is JobState.QUEUED)
