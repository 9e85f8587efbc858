"""Builders for the backend conformance suite: one NewJob builder, claim and outcome
parameters at a fixed fake ``now``, and small read-backs. No behaviour of their own."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from conveyor.backends.base import (
    Backend,
    ClaimedJob,
    ClaimParams,
    EnqueueParams,
    NewJob,
    Outcome,
)
from conveyor.models import TERMINAL_STATES, Job, JobState
from tests.integration.jobs import NOW
from tests.integration.jobs import new_job as queued_job

LEASE = 30.0


def new_job(name: str = "job", **kw: Any) -> NewJob:
    """A NewJob with defaults: queued, due at NOW, on channel "default", 3 attempts. A
    ``run_at`` after NOW makes it scheduled unless ``state`` is given too."""
    if "run_at" in kw and "state" not in kw and kw["run_at"] > NOW:
        kw = {**kw, "state": JobState.SCHEDULED}
    return queued_job(name, **kw)


async def enqueue(backend: Backend, *jobs: NewJob, now: float = NOW) -> list[int]:
    """Store ``jobs``; their ids, in order."""
    results = await backend.enqueue_many(EnqueueParams(list(jobs), now))
    assert all(r.created for r in results)
    return [r.id for r in results]


def claim_params(
    token: str = "tok", limit: int = 10, now: float = NOW, lease: float = LEASE, **kw: Any
) -> ClaimParams:
    return ClaimParams(
        worker_id=kw.pop("worker_id", "w1"),
        token=token,
        limit=limit,
        now=now,
        lease_expires_at=now + lease,
        **kw,
    )


async def claim(backend: Backend, **kw: Any) -> list[ClaimedJob]:
    return await backend.claim(claim_params(**kw))


async def claim_ids(backend: Backend, **kw: Any) -> list[int]:
    return [j.id for j in await claim(backend, **kw)]


def outcome(
    job_id: int, token: str = "tok", state: JobState = JobState.COMPLETED, **kw: Any
) -> Outcome:
    """A fenced transition of a claimed job (completed at NOW unless told otherwise)."""
    kw.setdefault("at", NOW)
    kw.setdefault("event", state.value)
    return Outcome(job_id=job_id, token=token, state=state, **kw)


async def finish(backend: Backend, job_id: int, token: str = "tok", **kw: Any) -> None:
    """Apply one outcome and insist that it applied."""
    assert await backend.complete_many([outcome(job_id, token, **kw)]) == [True]


def error(message: str = "boom", attempt: int = 1, at: float = NOW) -> str:
    """JSON text of one error record, as the core builds it."""
    return json.dumps(
        {"attempt": attempt, "type": "ValueError", "message": message, "traceback": "", "at": at}
    )


async def get(backend: Backend, job_id: int) -> Job:
    job = await backend.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


async def state_of(backend: Backend, job_id: int) -> JobState | None:
    job = await backend.get_job(job_id)
    return None if job is None else job.state


async def event_types(backend: Backend, job_id: int) -> list[str]:
    return [e.type for e in await backend.get_events(job_id)]


def ts(value: datetime | None) -> float | None:
    """A stored datetime as epoch seconds, rounded to the microsecond every store keeps."""
    return None if value is None else round(value.timestamp(), 6)


async def elapsed(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    """(the awaitable's result, wall seconds it took)."""
    start = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - start


async def one_in_each_state(backend: Backend, channel: str = "default") -> dict[JobState, int]:
    """One job in every state on ``channel`` (job ``in-<state>``); their ids by state. The
    ones that ran did so under the token ``t-<state>``."""
    jobs = {state: new_job(f"in-{state.value}", channel=channel) for state in JobState}
    jobs[JobState.SCHEDULED] = new_job("in-scheduled", channel=channel, run_at=NOW + 3600)
    ids = dict(zip(jobs, await enqueue(backend, *jobs.values()), strict=True))
    ran = (JobState.RUNNING, JobState.WAITING, *TERMINAL_STATES)
    for state in ran:
        taken = await claim_ids(
            backend, token=f"t-{state.value}", channels=(channel,), include=(f"in-{state}",)
        )
        assert taken == [ids[state]]
    for state in (JobState.WAITING, *TERMINAL_STATES):
        await finish(
            backend,
            ids[state],
            f"t-{state.value}",
            state=state,
            run_at=NOW + 3600 if state == JobState.WAITING else None,
            error=error() if state == JobState.FAILED else None,
        )
    return ids


async def quiet(backend: Backend) -> None:
    """Absorb pending wake-ups (an earlier enqueue's notification): return once a short
    ``wait_for_work`` runs to its timeout, so a quick return after this means something
    new woke it."""
    deadline = time.monotonic() + 10
    while True:
        _, took = await elapsed(backend.wait_for_work(0.2))
        if took >= 0.15:
            return
        assert time.monotonic() < deadline, "wait_for_work(0.2) keeps returning at once"
