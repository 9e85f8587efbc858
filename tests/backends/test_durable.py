"""Durable execution verbs: steps, waits (an Outcome to ``waiting``), tokens, resume_due.

The contract is in :mod:`conveyor.backends.records` and ``Outcome.wait_token``."""

from __future__ import annotations

import asyncio
import json
import uuid

from conveyor.backends.base import (
    NEVER,
    Backend,
    CancelOutcome,
    JobFilter,
    NewToken,
    PromoteParams,
    PruneParams,
    ResumeParams,
    RetryOutcome,
    StepSave,
    TokenCompletion,
)
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim_ids,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
    outcome,
    ts,
)


async def running(backend: Backend, token: str = "tok", **kw: object) -> int:
    """Enqueue one job and claim just it under ``token``; its id."""
    name = f"dur-{uuid.uuid4().hex[:8]}"
    [job_id] = await enqueue(backend, new_job(name, **kw))
    assert await claim_ids(backend, token=token, include=(name,)) == [job_id]
    return job_id


def step(
    job_id: int, name: str, result: object = None, token: str = "tok", **kw: object
) -> StepSave:
    return StepSave(job_id, token, name, json.dumps(result), kw.pop("at", NOW), **kw)  # type: ignore[arg-type]


def suspend(job_id: int, until: float, wait_token: str | None = None, token: str = "tok"):  # type: ignore[no-untyped-def]
    """The Outcome the core stores when a handler sleeps until ``until`` or waits on a token."""
    return outcome(
        job_id,
        token,
        state=JobState.WAITING,
        run_at=until,
        refund_attempt=True,
        wait_token=wait_token,
        event="waiting",
        event_data=json.dumps({"reason": "token" if wait_token else "sleep"}),
    )


async def waiting_on_token(
    backend: Backend, expires_at: float | None = NOW + 3600, tags: tuple[str, ...] = ()
) -> tuple[int, str]:
    """A job that created a token and now waits on it; (job id, token id)."""
    job_id = await running(backend)
    token_id = uuid.uuid4().hex
    save = step(
        job_id, "conveyor:token:1", {"id": token_id}, new_token=NewToken(token_id, expires_at, tags)
    )
    assert await backend.save_step(save)
    until = NEVER if expires_at is None else expires_at
    assert await backend.complete_many([suspend(job_id, until, token_id)]) == [True]
    return job_id, token_id


# -- steps ------------------------------------------------------------------------------------
async def test_steps_are_stored_in_order_and_the_first_result_stands(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(step(job_id, "load", {"order": 7}, at=NOW + 1))
    assert await backend.save_step(step(job_id, "ask", [1, "two"], at=NOW + 2))
    assert await backend.save_step(step(job_id, "load", {"order": 8}, at=NOW + 3))  # kept: first
    steps = await backend.load_steps(job_id)
    assert [(s.name, json.loads(s.result), s.at) for s in steps] == [
        ("load", {"order": 7}, NOW + 1),
        ("ask", [1, "two"], NOW + 2),
    ]


async def test_a_step_is_fenced_by_the_lease_token(backend: Backend) -> None:
    job_id = await running(backend)
    assert not await backend.save_step(step(job_id, "load", 1, token="stale"))
    await finish(backend, job_id)
    assert not await backend.save_step(step(job_id, "late", 1))
    assert not await backend.save_step(step(10**9, "nobody", 1))
    assert await backend.load_steps(job_id) == []
    assert await backend.load_steps(10**9) == []


async def test_unicode_step_names_and_results_round_trip(backend: Backend) -> None:
    job_id = await running(backend)
    name = "étape ✓ 'quoted' \"x\" {}"
    assert await backend.save_step(step(job_id, name, {"é": "✓"}))
    [stored] = await backend.load_steps(job_id)
    assert (stored.name, json.loads(stored.result)) == (name, {"é": "✓"})


async def test_a_token_is_stored_with_its_step(backend: Backend) -> None:
    job_id = await running(backend)
    save = step(job_id, "conveyor:token:1", {"id": "tk1"}, at=NOW + 5,
                new_token=NewToken("tk1", NOW + 100, ("approval", "é")))  # fmt: skip
    assert await backend.save_step(save)
    token = await backend.get_token("tk1")
    assert token is not None
    assert (token.id, token.job_id, token.state, token.tags) == (
        "tk1",
        job_id,
        "pending",
        ("approval", "é"),
    )
    assert (token.expires_at, token.created_at, token.completed_at, token.data) == (
        NOW + 100,
        NOW + 5,
        None,
        None,
    )
    assert [t.id for t in await backend.list_tokens(job_id)] == ["tk1"]
    assert await backend.get_token("nope") is None


async def test_a_fenced_out_step_stores_no_token_either(backend: Backend) -> None:
    job_id = await running(backend)
    save = step(
        job_id, "conveyor:token:1", {"id": "tk2"}, token="stale", new_token=NewToken("tk2", None)
    )
    assert not await backend.save_step(save)
    assert await backend.get_token("tk2") is None
    assert await backend.list_tokens(job_id) == []


# -- waits ------------------------------------------------------------------------------------
async def test_a_sleeping_job_waits_out_of_the_claim_and_keeps_its_attempt(
    backend: Backend,
) -> None:
    job_id = await running(backend)
    assert await backend.complete_many([suspend(job_id, NOW + 60)]) == [True]
    job = await get(backend, job_id)
    assert (job.state, ts(job.run_at), job.attempts, job.wait_token) == (
        "waiting",
        NOW + 60,
        0,
        None,
    )
    assert (await event_types(backend, job_id))[-1] == "waiting"
    assert await backend.expired_leases(NOW + 10_000, 10) == []  # no lease held
    # Not claimable, even once due: only resume_due brings it back.
    assert await claim_ids(backend, now=NOW + 120) == []
    assert (await backend.counts(None))["waiting"] == 1
    assert [j.id for j in await backend.list_jobs(JobFilter(state=JobState.WAITING))] == [job_id]
    promoted = await backend.promote_due(PromoteParams(now=NOW + 120, horizon=0, limit=100))
    assert promoted.count == 0
    assert (await get(backend, job_id)).state == "waiting"


async def test_resume_due_requeues_due_waiting_jobs_once(backend: Backend) -> None:
    soon, later = await running(backend), await running(backend)
    await backend.complete_many([suspend(soon, NOW + 10)])
    await backend.complete_many([suspend(later, NOW + 1000)])
    assert await backend.resume_due(ResumeParams(now=NOW + 5, limit=10)) == []
    [resumed] = await backend.resume_due(ResumeParams(now=NOW + 10, limit=10))
    assert (resumed.id, resumed.expired_token) == (soon, None)
    assert resumed.name.startswith("dur-") and resumed.attempts == 0
    job = await get(backend, soon)
    assert (job.state, ts(job.run_at)) == ("queued", NOW + 10)
    events = await backend.get_events(soon)
    assert (events[-1].type, dict(events[-1].data)) == ("resumed", {"reason": "due"})
    assert await backend.resume_due(ResumeParams(now=NOW + 10, limit=10)) == []
    assert await claim_ids(backend, now=NOW + 10, token="t2") == [soon]
    assert (await get(backend, soon)).attempts == 1  # the wait refunded the first run
    assert (await get(backend, later)).state == "waiting"


async def test_resume_due_honours_its_limit(backend: Backend) -> None:
    ids = [await running(backend) for _ in range(3)]
    for job_id in ids:
        await backend.complete_many([suspend(job_id, NOW + 1)])
    first = await backend.resume_due(ResumeParams(now=NOW + 1, limit=2))
    second = await backend.resume_due(ResumeParams(now=NOW + 1, limit=2))
    assert len(first) == 2 and len(second) == 1
    assert sorted(r.id for r in first + second) == sorted(ids)


async def test_many_processes_resume_a_due_job_exactly_once(store: Store) -> None:
    backends = [await store.connected() for _ in range(3)]
    ids = [await running(backends[0]) for _ in range(10)]
    for job_id in ids:
        await backends[0].complete_many([suspend(job_id, NOW + 1)])
    results = await asyncio.gather(
        *(b.resume_due(ResumeParams(now=NOW + 2, limit=100)) for b in backends for _ in range(2))
    )
    resumed = [r.id for result in results for r in result]
    assert sorted(resumed) == sorted(ids)
    for job_id in ids:
        assert (await event_types(backends[0], job_id)).count("resumed") == 1


async def test_an_expired_token_wait_is_resumed_and_the_token_expired(backend: Backend) -> None:
    job_id, token_id = await waiting_on_token(backend, expires_at=NOW + 50)
    job = await get(backend, job_id)
    assert (job.state, job.wait_token, ts(job.run_at)) == ("waiting", token_id, NOW + 50)
    [resumed] = await backend.resume_due(ResumeParams(now=NOW + 50, limit=10))
    assert (resumed.id, resumed.expired_token) == (job_id, token_id)
    token = await backend.get_token(token_id)
    assert token is not None and token.state == "expired"
    job = await get(backend, job_id)
    assert (job.state, job.wait_token) == ("queued", None)
    events = await backend.get_events(job_id)
    assert dict(events[-1].data) == {"reason": "expired", "token": token_id}
    done = await backend.complete_token(TokenCompletion(token_id, '"late"', NOW + 51))
    assert not done.completed


async def test_a_token_without_timeout_waits_until_completed(backend: Backend) -> None:
    job_id, token_id = await waiting_on_token(backend, expires_at=None)
    assert (await get(backend, job_id)).run_at.year == 9999
    assert await backend.resume_due(ResumeParams(now=NOW + 10**8, limit=10)) == []
    done = await backend.complete_token(TokenCompletion(token_id, '{"ok": 1}', NOW + 10**8))
    assert (done.completed, done.job_id, done.resumed) == (True, job_id, True)


# -- tokens -----------------------------------------------------------------------------------
async def test_completing_a_token_resumes_its_waiting_job_once(backend: Backend) -> None:
    job_id, token_id = await waiting_on_token(backend)
    done = await backend.complete_token(TokenCompletion(token_id, '{"amount": 5}', NOW + 7))
    assert (done.completed, done.job_id, done.resumed) == (True, job_id, True)
    assert done.job_name is not None and done.job_name.startswith("dur-")
    token = await backend.get_token(token_id)
    assert token is not None
    assert (token.state, json.loads(token.data or "null"), token.completed_at) == (
        "completed",
        {"amount": 5},
        NOW + 7,
    )
    job = await get(backend, job_id)
    assert (job.state, ts(job.run_at), job.wait_token) == ("queued", NOW + 7, None)
    events = await backend.get_events(job_id)
    assert (events[-1].type, dict(events[-1].data)) == ("resumed", {"reason": "token"})
    again = await backend.complete_token(TokenCompletion(token_id, '"twice"', NOW + 8))
    assert not again.completed and not again.resumed
    token = await backend.get_token(token_id)
    assert token is not None and json.loads(token.data or "null") == {"amount": 5}
    assert (await event_types(backend, job_id)).count("resumed") == 1
    assert await claim_ids(backend, now=NOW + 7, token="t2") == [job_id]


async def test_unknown_and_expired_tokens_are_not_completed(backend: Backend) -> None:
    assert not (await backend.complete_token(TokenCompletion("nope", "1", NOW))).completed
    job_id, token_id = await waiting_on_token(backend, expires_at=NOW + 50)
    late = await backend.complete_token(TokenCompletion(token_id, "1", NOW + 50))
    assert not late.completed  # expires_at <= now: expired, even before maintenance marks it
    assert (await get(backend, job_id)).state == "waiting"


async def test_concurrent_completions_complete_a_token_once(store: Store) -> None:
    backends = [await store.connected() for _ in range(3)]
    job_id, token_id = await waiting_on_token(backends[0])
    results = await asyncio.gather(
        *(
            b.complete_token(TokenCompletion(token_id, json.dumps(i), NOW + 1))
            for i, b in enumerate(backends * 2)
        )
    )
    assert sum(r.completed for r in results) == 1
    assert sum(r.resumed for r in results) == 1
    assert (await event_types(backends[0], job_id)).count("resumed") == 1


async def test_a_token_completed_before_its_job_suspends_resumes_it_at_once(
    backend: Backend,
) -> None:
    job_id = await running(backend)
    assert await backend.save_step(
        step(job_id, "conveyor:token:1", {"id": "early"}, new_token=NewToken("early", NOW + 100))
    )
    done = await backend.complete_token(TokenCompletion("early", '"yes"', NOW + 1))
    assert (done.completed, done.job_id, done.resumed) == (True, job_id, False)
    assert (await get(backend, job_id)).state == "running"
    wait = suspend(job_id, NOW + 100, "early")
    assert await backend.complete_many([wait]) == [True]
    job = await get(backend, job_id)
    assert (job.state, job.wait_token, ts(job.run_at)) == ("queued", None, NOW)
    assert (await event_types(backend, job_id))[-1] == "resumed"
    # the outcome now says what was stored, for the core to report
    assert (wait.state, wait.event, wait.run_at, wait.wait_token) == (
        "queued",
        "resumed",
        NOW,
        None,
    )
    assert json.loads(wait.event_data or "null") == {"reason": "token"}
    assert await claim_ids(backend, now=NOW, token="t2") == [job_id]


async def test_suspending_on_an_expired_token_resumes_and_expires_it(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(
        step(job_id, "conveyor:token:1", {"id": "old"}, new_token=NewToken("old", NOW - 1))
    )
    assert await backend.complete_many([suspend(job_id, NOW - 1, "old")]) == [True]
    assert (await get(backend, job_id)).state == "queued"
    token = await backend.get_token("old")
    assert token is not None and token.state == "expired"


async def test_a_suspend_with_a_stale_lease_changes_nothing(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.complete_many([suspend(job_id, NOW + 60, token="stale")]) == [False]
    assert (await get(backend, job_id)).state == "running"


# -- management -------------------------------------------------------------------------------
async def test_a_waiting_job_can_be_cancelled(backend: Backend) -> None:
    job_id, token_id = await waiting_on_token(backend, expires_at=NOW + 10)
    assert await backend.cancel(job_id, NOW + 1) == CancelOutcome.CANCELLED
    job = await get(backend, job_id)
    assert (job.state, job.wait_token) == ("cancelled", None)
    assert await backend.resume_due(ResumeParams(now=NOW + 100, limit=10)) == []
    done = await backend.complete_token(TokenCompletion(token_id, "1", NOW + 2))
    assert not done.resumed
    assert (await get(backend, job_id)).state == "cancelled"


async def test_a_cancel_requested_before_a_suspend_cancels_instead_of_waiting(
    backend: Backend,
) -> None:
    """The cancel came after the worker's last look and before the handler suspended:
    the job is cancelled, not left waiting with the request forgotten."""
    job_id = await running(backend)
    assert await backend.cancel(job_id, NOW) is CancelOutcome.REQUESTED
    wait = suspend(job_id, NOW + 3600)
    assert await backend.complete_many([wait]) == [True]
    job = await get(backend, job_id)
    assert (job.state, job.wait_token, ts(job.finished_at)) == ("cancelled", None, NOW)
    assert (await event_types(backend, job_id))[-1] == "cancelled"
    assert (wait.state, wait.event, wait.event_data, wait.wait_token) == (
        "cancelled", "cancelled", None, None)  # fmt: skip
    assert await backend.resume_due(ResumeParams(now=NOW + 7200, limit=10)) == []
    assert await claim_ids(backend, now=NOW + 7200, token="t2") == []


async def test_a_cancel_requested_before_a_token_wait_cancels_it(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(
        step(job_id, "conveyor:token:1", {"id": "tk"}, new_token=NewToken("tk", NOW + 100))
    )
    assert await backend.cancel(job_id, NOW) is CancelOutcome.REQUESTED
    assert await backend.complete_many([suspend(job_id, NOW + 100, "tk")]) == [True]
    assert (await get(backend, job_id)).state == "cancelled"
    done = await backend.complete_token(TokenCompletion("tk", "1", NOW + 1))
    assert not done.resumed
    assert (await get(backend, job_id)).state == "cancelled"


async def test_cancel_jobs_includes_waiting_jobs(backend: Backend) -> None:
    job_id = await running(backend, tags=("drip",))
    await backend.complete_many([suspend(job_id, NOW + 60)])
    assert await backend.cancel_jobs(JobFilter(tags=("drip",)), NOW) == 1
    assert (await get(backend, job_id)).state == "cancelled"


async def test_a_retried_job_keeps_its_steps(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(step(job_id, "load", 1))
    await finish(backend, job_id, state=JobState.FAILED, error=error())
    assert (await backend.retry(job_id, NOW + 1)).outcome == RetryOutcome.RETRIED
    assert [s.name for s in await backend.load_steps(job_id)] == ["load"]


async def test_removing_a_job_removes_its_steps_and_tokens(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(step(job_id, "t", 1, new_token=NewToken("gone-1", None)))
    await finish(backend, job_id, remove=True)
    assert await backend.get_job(job_id) is None
    assert await backend.load_steps(job_id) == []
    assert await backend.get_token("gone-1") is None


async def test_prune_removes_steps_and_tokens(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(step(job_id, "t", 1, new_token=NewToken("gone-2", None)))
    await finish(backend, job_id, at=NOW)
    pruned = await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 100))
    assert [r.id for r in pruned.removed] == [job_id]
    assert await backend.load_steps(job_id) == []
    assert await backend.get_token("gone-2") is None
    assert await backend.list_tokens(job_id) == []


async def test_a_completed_job_keeps_its_steps_and_tokens_until_removed(backend: Backend) -> None:
    job_id = await running(backend)
    assert await backend.save_step(step(job_id, "t", 1, new_token=NewToken("kept", None)))
    await finish(backend, job_id)
    assert [s.name for s in await backend.load_steps(job_id)] == ["t"]
    token = await backend.get_token("kept")
    assert token is not None and token.job_id == job_id
