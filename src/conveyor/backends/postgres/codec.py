"""Parameters in, rows out: how the PostgreSQL backend talks to its queries.

Batches travel as one JSON array per statement (read with ``json_to_recordset``);
rows come back as tuples in the column order of ``queries.sql``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from conveyor.backends.base import (
    ClaimedJob,
    ClaimParams,
    CronRecord,
    EnqueueResult,
    ExpiredLease,
    JobFilter,
    LogEntry,
    NewJob,
    Outcome,
)
from conveyor.backends.rows import job_from_row
from conveyor.errors import BackendError
from conveyor.models import Job, JobState

__all__ = [
    "NOTIFY_LIMIT",
    "batch_results",
    "claim_args",
    "claimed_job",
    "complete_args",
    "cron_args",
    "cron_record",
    "dedupe_keys",
    "expired_lease",
    "filter_args",
    "has_wait",
    "job",
    "job_args",
    "jobs_json",
    "keyed_batch_results",
    "logs_json",
    "notify_payload",
    "outcomes_json",
    "queued_channels",
]

NOTIFY_LIMIT = 4000  # bytes; NOTIFY allows < 8000, and a bigger payload says nothing new
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_STR: Callable[[str], str] = json.encoder.encode_basestring  # C: a str as a JSON string


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


# The defaults enqueue_batch applies to the fields a job object leaves out (queries.sql).
_DEFAULT_CHANNEL = "default"
_DEFAULT_ATTEMPTS = 1
_DEFAULT_STALLS = 1
_JSON_SPACE = frozenset(" \t\n\r")


def _embeddable(text: str) -> bool:
    """Whether JSON text can ride in a batch document as a JSON value and come back
    verbatim through a ``json`` column: not ``null`` (which the column reads as SQL
    NULL), no ``\\u`` escape (json_to_recordset decodes escapes, and cannot decode
    ``\\u0000``), no whitespace around it (not part of the value). The core's encoder
    writes no whitespace, and escapes only control characters that way."""
    return (
        bool(text)
        and text != "null"
        and "\\u" not in text
        and text[0] not in _JSON_SPACE
        and text[-1] not in _JSON_SPACE
    )


def jobs_json(jobs: Sequence[NewJob], indexes: Sequence[int], now: float) -> str:
    """The ``enqueue_batch`` document: one object per job in ``indexes`` order, with its
    name, its payload embedded as JSON (or as the string ``payload_text``, see
    :func:`_embeddable`), and only the fields that differ from the statement's defaults.

    Built as text, without a dict per job; the payload is already JSON, so it is neither
    encoded again here nor decoded on the server. Strings go through the json module's
    C string encoder.
    """
    parts = []
    for i in indexes:
        job = jobs[i]
        payload = job.payload
        if _embeddable(payload):
            row = '{"name":' + _STR(job.name) + ',"payload":' + payload
        else:
            row = '{"name":' + _STR(job.name) + ',"payload_text":' + _STR(payload)
        if job.state is not JobState.QUEUED:
            row += ',"state":' + _STR(job.state.value)
        if job.run_at != now:
            row += ',"run_at":' + repr(float(job.run_at))
        if job.priority:
            row += ',"priority":' + str(int(job.priority))
        if job.channel != _DEFAULT_CHANNEL:
            row += ',"channel":' + _STR(job.channel)
        if job.max_attempts != _DEFAULT_ATTEMPTS:
            row += ',"max_attempts":' + str(int(job.max_attempts))
        if job.max_stalls != _DEFAULT_STALLS:
            row += ',"max_stalls":' + str(int(job.max_stalls))
        if job.options is not None:
            row += ',"options":' + _STR(job.options)
        if job.remove_on_complete:
            row += ',"remove_on_complete":true'
        if job.idempotency_key is not None:
            row += ',"idempotency_key":' + _STR(job.idempotency_key)
        if job.tags:
            row += ',"tags":[' + ",".join([_STR(tag) for tag in job.tags]) + "]"
        if job.group is not None:
            row += ',"group_key":' + _STR(job.group)
        if job.tenant is not None:
            row += ',"tenant":' + _STR(job.tenant)
        parts.append(row + "}")
    return "[" + ",".join(parts) + "]"


def job_args(job: NewJob, now: float) -> dict[str, Any]:
    """The typed parameters of ``enqueue_one`` / ``enqueue_one_keyed``."""
    args = {
        "state": job.state.value,
        "name": job.name,
        "payload": job.payload,
        "run_at": float(job.run_at),
        "now": float(now),
        "priority": job.priority,
        "channel": job.channel,
        "max_attempts": job.max_attempts,
        "max_stalls": job.max_stalls,
        "options": job.options,
        "remove_on_complete": job.remove_on_complete,
        "tags": list(job.tags),
        "group_key": job.group,
        "tenant": job.tenant,
    }
    if job.idempotency_key is not None:
        args["idempotency_key"] = job.idempotency_key
    return args


def batch_results(
    indexes: Sequence[int], rows: Sequence[Sequence[Any]]
) -> dict[int, EnqueueResult]:
    """Map the ids ``enqueue_batch`` returns to the inputs: ascending ids are the rows in
    input order (queries.sql)."""
    ids = sorted(int(row[0]) for row in rows)
    if len(ids) != len(indexes):
        raise BackendError(f"enqueue stored {len(ids)} jobs for a batch of {len(indexes)}")
    return {i: EnqueueResult(job_id, True) for i, job_id in zip(indexes, ids, strict=True)}


def keyed_batch_results(
    jobs: Sequence[NewJob], indexes: Sequence[int], rows: Sequence[Sequence[Any]]
) -> dict[int, EnqueueResult]:
    """Map the rows of ``enqueue_batch_keyed`` to the inputs: jobs without a key by order
    (as :func:`batch_results`), jobs with one by (tenant, key). A keyed job whose key
    came back nowhere (committed concurrently after the snapshot) is left out."""
    plain: list[int] = []
    by_key: dict[tuple[str, str], EnqueueResult] = {}
    for job_id, tenant, key, created in rows:
        if key is None:
            plain.append(int(job_id))
        elif created or (tenant, key) not in by_key:
            by_key[(tenant, key)] = EnqueueResult(int(job_id), bool(created))
    unkeyed = [i for i in indexes if jobs[i].idempotency_key is None]
    out = batch_results(unkeyed, [(job_id,) for job_id in plain])
    for i in indexes:
        job = jobs[i]
        if job.idempotency_key is not None:
            found = by_key.get((job.tenant or "", job.idempotency_key))
            if found is not None:
                out[i] = found
    return out


def notify_payload(channels: Counter[str]) -> str | None:
    """``{"channel": count}`` of newly due jobs (None: nothing to announce). Too many
    channels for one NOTIFY collapse to ``""``, which means "any channel"."""
    if not channels:
        return None
    text = _DUMPS(dict(channels))
    return text if len(text.encode()) <= NOTIFY_LIMIT else ""


def claim_args(params: ClaimParams) -> dict[str, Any]:
    """The parameters of ``claim`` (and of the claim half of ``complete_claim``)."""
    limit = params.limit
    channels = params.channels
    return {
        "now": params.now,
        "lease_expires_at": params.lease_expires_at,
        "token": params.token,
        "worker_id": params.worker_id,
        "limit": limit,
        # a few extra candidates so that a group's further members (skipped: one
        # per group per batch) do not leave the batch short
        "scan": limit * 2 if limit < 50 else limit + 50,
        "channel": channels[0] if channels else None,
        "channels": list(channels) if channels is not None else None,
        "include": list(params.include) if params.include is not None else None,
        "exclude": list(params.exclude) if params.exclude is not None else None,
    }


def has_wait(outcomes: Sequence[Outcome]) -> bool:
    """Whether a batch suspends a job (an outcome to ``waiting``): it then goes through
    the ``complete_wait_*`` statements, every other batch through the plain ones."""
    return any(o.state is JobState.WAITING for o in outcomes)


def complete_args(
    outcomes: Sequence[Outcome], notify_channel: str, wait: bool = False
) -> dict[str, Any]:
    """The parameters of ``complete_many`` (and of the complete half of
    ``complete_claim``): a NOTIFY only when some outcome requeues a job (a wait may: its
    token was completed or expired meanwhile). ``wait``: see :func:`has_wait`."""
    requeue = wait or any(o.state is JobState.QUEUED and not o.remove for o in outcomes)
    return {
        "outcomes": outcomes_json(outcomes, wait),
        "notify_channel": notify_channel,
        "notify": "" if requeue else None,
    }


def outcomes_json(outcomes: Sequence[Outcome], wait: bool = False) -> str:
    rows = [
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
            "stall": o.stall,
            "remove": o.remove,
            "expired_before": o.expired_before,
            "data": o.event_data,
            "again": o.yields_to_cancel,
        }
        for i, o in enumerate(outcomes)
    ]
    if wait:
        for row, o in zip(rows, outcomes, strict=True):
            row["wait_token"] = o.wait_token
    return _DUMPS(rows)


def logs_json(entries: Sequence[LogEntry]) -> str:
    return _DUMPS(
        [
            {
                "i": i,
                "job_id": e.job_id,
                "token": e.token,
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
        "name_prefix": flt.name_prefix,
        "channel": flt.channel,
        "tenant": flt.tenant,
        "before_id": flt.before_id,
        "tags": list(flt.tags) if flt.tags is not None else None,
        "tag_mode": flt.tag_mode,
        "limit": flt.limit,
    }


def job(row: Mapping[str, Any]) -> Job:
    """A row of ``get_job`` / ``list_jobs``, its ``wait_token`` included."""
    found = job_from_row(row)
    wait_token = row.get("wait_token")
    return found if found.wait_token == wait_token else replace(found, wait_token=wait_token)


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
        stalls=row[14],
        max_stalls=row[15],
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
        stalls=row[8],
        max_stalls=row[9],
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
