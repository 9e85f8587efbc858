"""Encoding Python values as script arguments, and decoding script replies.

Times cross as ``repr(float)`` strings, which Redis and Lua parse back to the very same
double; scripts store them verbatim, so nothing is rounded on the way.

Reply shapes: conveyor's connections speak RESP2 (pinned in
:mod:`~conveyor.backends.redis.connections`), and a script's reply has the same shape in
RESP2 and RESP3 anyway (Lua tables become arrays either way). Plain commands whose reply
conveyor reads itself differ between the two: RESP3 sends ``ZPOPMIN key n`` /
``ZRANGE … WITHSCORES`` as ``[member, score]`` pairs where RESP2 sends one flat list, so
every such reply is decoded by a function here that accepts both
(:func:`zset_members`; the event stream's replies in :mod:`.stream`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from json.scanner import make_scanner
from typing import Any

from conveyor.backends.base import (
    ClaimedJob,
    ClaimParams,
    CronFire,
    CronRecord,
    ExpiredLease,
    JobFilter,
    NewJob,
    Outcome,
    PruneResult,
    RemovedJob,
    RetryOutcome,
    RetryResult,
    as_stored,
)
from conveyor.backends.redis.keys import order_key
from conveyor.backends.rows import event_from_row, job_from_row, log_from_row
from conveyor.models import Event, Job, JobState, LogRecord

__all__ = [
    "ENQUEUED_FIELDS",
    "claim_args",
    "claimed_from_reply",
    "complete_args",
    "counted",
    "cron_args",
    "cron_fire_args",
    "cron_from_flat",
    "enqueue_args",
    "enqueued_event",
    "events_from_list",
    "expired_from_reply",
    "filter_args",
    "flat_to_dict",
    "handed_from_member",
    "job_args",
    "job_from_hash",
    "logs_from_list",
    "opt",
    "opt_ts",
    "registration",
    "removed_from_reply",
    "retry_from_reply",
    "ts",
    "zset_members",
]


def ts(value: float) -> str:
    """A time (epoch seconds) as an exact decimal string."""
    return repr(float(value))


def opt(value: str | None) -> str:
    """An optional string argument ("" means None; every such value is non-empty)."""
    return "" if value is None else value


def opt_ts(value: float | None) -> str:
    """An optional time argument ("" means None)."""
    return "" if value is None else repr(float(value))


def counted(values: Sequence[str] | None) -> list[str]:
    """A counted list: its length (-1 for None), then its values."""
    if values is None:
        return ["-1"]
    return [str(len(values)), *values]


def job_args(job: NewJob) -> list[str]:
    """The 15 arguments of one job for ``enqueue.lua`` / ``cron_fire.lua``."""
    run_at = job.run_at
    tags = job.tags
    return [
        job.name,
        job.payload,
        str(job.state),
        repr(float(run_at)),
        order_key(run_at),
        str(int(job.priority)),
        job.channel,
        str(int(job.max_attempts)),
        job.options or "",
        "1" if job.remove_on_complete else "0",
        job.idempotency_key or "",
        json.dumps(list(tags), ensure_ascii=False) if tags else "[]",
        job.group or "",
        job.tenant or "",
        str(int(job.max_stalls)),
    ]


def enqueue_args(now: float, jobs: Sequence[NewJob]) -> list[str]:
    """The arguments of ``enqueue.lua`` (from its ``ARGV[2]``): now, ``order_key(now)``
    (for a hand-off's claim), the number of jobs, then 15 values per job
    (:func:`job_args`)."""
    args = [repr(float(now)), order_key(now), str(len(jobs))]
    for job in jobs:
        args += job_args(job)
    return args


def claim_args(params: ClaimParams) -> list[str]:
    """The arguments of ``claim.lua`` (from its ``ARGV[2]``)."""
    now = params.now
    args = [
        params.worker_id,
        params.token,
        str(int(params.limit)),
        repr(float(now)),
        order_key(now),
        repr(float(params.lease_expires_at)),
        *counted(params.channels),
        *counted(params.include),
        *counted(params.exclude),
    ]
    if not params.limits and not params.fair:
        return args
    # claim_limited.lua / complete_claim_limited.lua: the limits and fairness follow
    args.append(str(len(params.limits)))
    for lim in params.limits:
        per = "" if lim.per is None else repr(float(lim.per))
        span = "" if lim.span is None else repr(float(lim.span))
        args += (lim.scope, lim.target, lim.key or "", str(int(lim.n)), per, span)
    args.append(str(len(params.fair)))
    for channel, column in params.fair:
        args += (channel, column)
    return args


def registration(params: ClaimParams, expires_at: float) -> str:
    """A standing claim as stored in ``P waiters`` (JSON; see ``hand_off`` in
    ``_lib_worker.lua``): the claim's token, worker, limit and filters, its lease *length*
    (the hand-off's lease runs from the enqueue's ``now``, as a claim's would) and when
    the registration expires."""
    reg: dict[str, Any] = {
        "t": params.token,
        "w": params.worker_id,
        "n": int(params.limit),
        "l": repr(float(params.lease_expires_at - params.now)),
        "x": repr(float(expires_at)),
    }
    if params.channels is not None:
        reg["c"] = list(params.channels)
    if params.include is not None:
        reg["i"] = list(params.include)
    if params.exclude is not None:
        reg["e"] = list(params.exclude)
    # what its limits and fairness cover is never handed over (a claim applies them)
    names = sorted({lim.target for lim in params.limits if lim.scope == "name"})
    channels = {lim.target for lim in params.limits if lim.scope != "name"}
    channels.update(channel for channel, _ in params.fair)
    if names:
        reg["ln"] = names
    if channels:
        reg["lc"] = sorted(channels)
    return json.dumps(reg, ensure_ascii=False, separators=(",", ":"))


# json.loads minus its whitespace regexes: far cheaper on the hot path of a worker that
# just woke up, where everything runs cold
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types the context as a scanner
)


def handed_from_member(member: str) -> list[ClaimedJob]:
    """The jobs of one hand-off member: JSON ``[token, row, ...]``, row = id, name,
    payload, attempts, max_attempts, channel, priority, tenant, group, tags (JSON text),
    options, run_at, created_at, remove_on_complete, stalls, max_stalls (see the hand-off
    in ``_lib_worker.lua``).

    Raises:
        ValueError, StopIteration, TypeError, IndexError: not such a member.
    """
    (token, *rows), _ = _scan(member, 0)
    # positional: id, name, payload, attempts, max_attempts, channel, priority, tenant,
    # group, tags, options, run_at, created_at, token, remove_on_complete, stalls,
    # max_stalls
    return [
        ClaimedJob(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _tags(r[9]),
                   r[10], float(r[11]), float(r[12]), token, r[13] is True, int(r[14]),
                   int(r[15]))
        for r in rows
    ]  # fmt: skip


def zset_members(reply: Sequence[Any] | None) -> list[Any]:
    """The members of a ``ZPOPMIN key n`` or ``ZRANGE … WITHSCORES`` reply, in order:
    RESP2 sends ``member, score, member, score, …``, RESP3 ``[member, score]`` pairs."""
    if not reply:
        return []
    if isinstance(reply[0], list | tuple):  # RESP3: a member is never an array
        return [pair[0] for pair in reply]
    return list(reply[::2])


#: What an outcome's code from complete.lua says it was stored as, when not as asked.
_STORED_AS = {2: "cancelled", 3: "resumed"}


def applied(outcomes: Sequence[Outcome], codes: Sequence[int]) -> list[bool]:
    """complete.lua's codes per outcome: whether each applied; the ones stored as
    something else are made to say so (``as_stored``)."""
    as_stored(outcomes, {i: _STORED_AS[c] for i, c in enumerate(codes) if c in _STORED_AS})
    return [c != 0 for c in codes]


def complete_args(keep_removed_events: str, outcomes: Sequence[Outcome]) -> list[str]:
    """The arguments of ``complete.lua`` (from its ``ARGV[2]``): how long a removed job's
    events are kept (seconds), then the counted outcomes, 16 values each. For a wait on a
    token the order key is ``order_key(at)``: the job is queued at ``at`` instead of
    waiting if the token is no longer waitable (see ``apply_outcome`` in ``_lib_worker.lua``)."""
    args = [keep_removed_events, str(len(outcomes))]
    for o in outcomes:
        run_at, wait_token = o.run_at, o.wait_token
        if wait_token is not None:
            ord = order_key(o.at)
        else:
            ord = "" if run_at is None else order_key(run_at)
        args += [
            str(o.job_id),
            o.token,
            str(o.state),
            repr(float(o.at)),
            o.event,
            "" if run_at is None else repr(float(run_at)),
            ord,
            o.result or "",
            o.error or "",
            "1" if o.refund_attempt else "0",
            "1" if o.remove else "0",
            "" if o.expired_before is None else repr(float(o.expired_before)),
            o.event_data or "",
            "1" if o.stall else "0",
            wait_token or "",
            "1" if o.yields_to_cancel else "0",
        ]
    return args


def filter_args(flt: JobFilter) -> list[str]:
    """Name, channel, tenant, name prefix, tag mode and the counted tags of a filter
    (``read_filter`` in ``_lib_jobs.lua``; an empty prefix filters nothing out)."""
    tags = None if flt.tags is None else list(flt.tags)
    return [
        opt(flt.name),
        opt(flt.channel),
        opt(flt.tenant),
        flt.name_prefix or "",
        flt.tag_mode,
        *counted(tags),
    ]


def _tags(text: str | None) -> tuple[str, ...]:
    if text == "[]":
        return ()
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(t) for t in value) if isinstance(value, list) else ()


def claimed_from_reply(row: Sequence[Any], token: str) -> ClaimedJob:
    """One array returned by ``claim.lua``."""
    return ClaimedJob(
        id=int(row[0]),
        name=str(row[1]),
        payload=str(row[2]),
        attempts=int(row[3]),
        max_attempts=int(row[4]),
        channel=str(row[5]),
        priority=int(row[6]),
        tenant=row[7],
        group=row[8],
        tags=_tags(row[9]),
        options=row[10],
        run_at=float(row[11]),
        created_at=float(row[12]),
        token=token,
        remove_on_complete=row[13] == "1",
        stalls=int(row[14]),
        max_stalls=int(row[15]),
    )


def expired_from_reply(row: Sequence[Any]) -> ExpiredLease:
    """One array returned by ``expired_leases.lua``."""
    return ExpiredLease(
        id=int(row[0]),
        token=str(row[1]),
        name=str(row[2]),
        tenant=row[3],
        attempts=int(row[4]),
        max_attempts=int(row[5]),
        options=row[6],
        cancel_requested=bool(row[7]),
        stalls=int(row[8]),
        max_stalls=int(row[9]),
    )


def removed_from_reply(flat: Sequence[Any]) -> PruneResult:
    """``prune.lua``'s reply: id, name, tenant ("" for none), attempts, per deleted job."""
    return PruneResult(
        [
            RemovedJob(int(flat[i]), str(flat[i + 1]), flat[i + 2] or None, int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]
    )


def job_from_hash(row: Mapping[str, Any]) -> Job:
    """A job's hash as a Job, ``wait_token`` included (``""`` or absent: None)."""
    job = job_from_row(row)
    wait_token = row.get("wait_token") or None
    if job.wait_token != wait_token:
        job = dataclasses.replace(job, wait_token=wait_token)
    return job


def flat_to_dict(flat: Sequence[Any]) -> dict[str, Any]:
    """A flat ``field, value, …`` reply (HGETALL inside Lua) as a dict."""
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def cron_from_flat(flat: Sequence[Any]) -> CronRecord:
    """One schedule hash (see ``cron_upsert.lua``)."""
    h = flat_to_dict(flat)
    last_job = h.get("last_job_id")
    return CronRecord(
        name=h["name"],
        expression=h["expression"],
        job=h["job"],
        payload=h["payload"],
        timezone=h["timezone"],
        paused=h.get("paused") == "1",
        allow_overlap=h.get("allow_overlap") == "1",
        catch_up=_float_or_none(h.get("catch_up")),
        options=h.get("options") or None,
        next_run_at=_float_or_none(h.get("next_run_at")),
        last_run_at=_float_or_none(h.get("last_run_at")),
        last_job_id=None if last_job in (None, "") else int(last_job),
    )


def cron_args(record: CronRecord) -> list[str]:
    """The arguments of ``cron_upsert.lua`` (from its ``ARGV[2]``)."""
    return [
        record.name,
        record.expression,
        record.job,
        record.payload,
        record.timezone,
        "1" if record.paused else "0",
        "1" if record.allow_overlap else "0",
        opt_ts(record.catch_up),
        opt(record.options),
        opt_ts(record.next_run_at),
        opt_ts(record.last_run_at),
        "" if record.last_job_id is None else str(record.last_job_id),
    ]


def cron_fire_args(fire: CronFire) -> list[str]:
    """The arguments of ``cron_fire.lua`` (from its ``ARGV[2]``): the tick, then the job
    as one job of ``enqueue.lua`` when there is one."""
    job = fire.job
    return [
        fire.name,
        ts(fire.expected_next),
        opt_ts(fire.new_next),
        ts(fire.tick),
        ts(fire.now),
        "0" if job is None else "1",
        *([] if job is None else job_args(job)),
    ]


def retry_from_reply(reply: Sequence[Any]) -> RetryResult:
    """The reply of ``retry.lua``: ``{outcome, state | nil}``."""
    outcome, state = reply[0], reply[1] if len(reply) > 1 else None
    return RetryResult(RetryOutcome(outcome), None if state is None else JobState(state))


ENQUEUED_FIELDS = ("name", "tenant", "created_at", "remove_on_complete")
"""The job hash fields :func:`enqueued_event` reads."""


def enqueued_event(job_id: int, fields: Sequence[Any]) -> Event | None:
    """A job's ``enqueued`` event, derived from its hash (:data:`ENQUEUED_FIELDS`, see
    ``write_job`` in ``_lib_jobs.lua``); None when the job is gone or removable (then the
    event is stored in its event list instead)."""
    name, tenant, created_at, remove_on_complete = fields
    if name is None or remove_on_complete == "1":
        return None
    row = {
        "type": "enqueued",
        "job_id": job_id,
        "job_name": name,
        "tenant": tenant or None,
        "at": created_at,
    }
    return event_from_row(row)


def events_from_list(job_id: int, items: Sequence[str]) -> list[Event]:
    """A job's event LIST (JSON objects; the job id is implied by the key)."""
    out = []
    for item in items:
        row = json.loads(item)
        row["job_id"] = job_id
        out.append(event_from_row(row))
    return out


def logs_from_list(items: Sequence[str]) -> list[LogRecord]:
    """A job's log LIST."""
    return [log_from_row(json.loads(item)) for item in items]
