"""Row → model conversion shared by every backend (so none re-implements decoding)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from conveyor.clock import from_ts
from conveyor.models import Event, Job, JobState, LogRecord

__all__ = ["event_from_row", "job_from_row", "loads_or_raw", "log_from_row"]


def loads_or_raw(text: str | bytes | None) -> Any:
    """Decode JSON text; an undecodable value is returned as the raw string."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text if isinstance(text, str) else text.decode("utf-8", "replace")


def _ts(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


def job_from_row(row: Mapping[str, Any]) -> Job:
    """Build a Job from a mapping with the column names of the SQL schema.

    Expects: id, name, payload (JSON text), state, attempts, stalls (absent: 0),
    max_attempts, progress, result (JSON text|None), errors (JSON text of a list|None),
    tags (JSON text of a list, or a list), group_key, tenant, channel, priority, run_at,
    created_at, started_at, finished_at (epoch seconds or datetimes), options (JSON
    text|None), idempotency_key.
    """
    errors_raw = row.get("errors")
    errors = loads_or_raw(errors_raw) if isinstance(errors_raw, str | bytes) else errors_raw
    tags_raw = row.get("tags")
    tags = loads_or_raw(tags_raw) if isinstance(tags_raw, str | bytes) else tags_raw
    options = loads_or_raw(row.get("options")) or {}
    timeout = options.get("timeout") if isinstance(options, dict) else None
    run_at = _ts(row["run_at"])
    created = _ts(row["created_at"])
    return Job(
        id=int(row["id"]),
        name=str(row["name"]),
        payload=loads_or_raw(row.get("payload")),
        state=JobState(row["state"]),
        attempts=int(row["attempts"]),
        stalls=int(row.get("stalls") or 0),
        max_attempts=int(row["max_attempts"]),
        progress=int(row.get("progress") or 0),
        result=loads_or_raw(row.get("result")),
        errors=tuple(errors or ()),
        tags=tuple(tags or ()),
        group=row.get("group_key"),
        tenant=row.get("tenant"),
        channel=str(row["channel"]),
        priority=int(row["priority"]),
        run_at=from_ts(run_at),  # type: ignore[arg-type]
        created_at=from_ts(created),  # type: ignore[arg-type]
        started_at=from_ts(_ts(row.get("started_at"))),
        finished_at=from_ts(_ts(row.get("finished_at"))),
        timeout=timeout,
        idempotency_key=row.get("idempotency_key"),
    )


def event_from_row(row: Mapping[str, Any]) -> Event:
    """Expects: type, job_id, job_name, tenant, attempt, at, data (JSON text|None)."""
    data = loads_or_raw(row.get("data"))
    return Event(
        type=str(row["type"]),
        job_id=int(row["job_id"]),
        job_name=str(row["job_name"]),
        tenant=row.get("tenant"),
        attempt=int(row.get("attempt") or 0),
        at=from_ts(_ts(row["at"])),  # type: ignore[arg-type]
        data=data if isinstance(data, dict) else {},
    )


def log_from_row(row: Mapping[str, Any]) -> LogRecord:
    """Expects: at, level, message, attempt."""
    return LogRecord(
        at=from_ts(_ts(row["at"])),  # type: ignore[arg-type]
        level=str(row["level"]),
        message=str(row["message"]),
        attempt=int(row.get("attempt") or 0),
    )
