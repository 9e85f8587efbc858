"""Workflows at the verb level: dependencies (edges resolved in the transition that
finishes a dependency, cascading), batches with a callback stored exactly once, and
uniqueness windows. The contract is the "Workflows" block of
``conveyor.backends.records``."""

from __future__ import annotations

import asyncio
import json

import pytest

from conveyor.backends.base import (
    Backend,
    CancelOutcome,
    EnqueueParams,
    JobFilter,
    NewBatch,
    PruneParams,
)
from conveyor.errors import ValidationError
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim_ids,
    claim_params,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
    outcome,
)


async def run_one(backend: Backend, job_id: int, token: str, **kw: object) -> None:
    """Claim exactly ``job_id`` (by its name) and end it as ``kw`` says (completed)."""
    job = await get(backend, job_id)
    assert await claim_ids(backend, token=token, include=(job.name,)) == [job_id]
    await finish(backend, job_id, token, **kw)


async def test_a_dependent_waits_and_is_queued_when_its_last_dependency_completes(
    backend: Backend,
) -> None:
    a, b = await enqueue(backend, new_job("dep-a"), new_job("dep-b"))
    [c] = await enqueue(backend, new_job("dep-c", depends_on=(a, b)))
    job = await get(backend, c)
    assert job.state == JobState.WAITING and job.wait_token is None
    assert await claim_ids(backend, token="x", include=("dep-c",)) == []
    await run_one(backend, a, "ta", result='"A"')
    assert (await get(backend, c)).state == JobState.WAITING  # one still to go
    await run_one(backend, b, "tb", result='"B"')
    job = await get(backend, c)
    assert job.state == JobState.QUEUED
    events = await backend.get_events(c)
    assert (events[-1].type, dict(events[-1].data)) == ("resumed", {"reason": "dependencies"})
    results = await backend.dependency_results(c)
    assert {k: json.loads(v) if v else v for k, v in results.items()} == {a: "A", b: "B"}


async def test_a_chain_in_one_call_refers_to_earlier_jobs(backend: Backend) -> None:
    ids = await enqueue(
        backend,
        new_job("chain-1"),
        new_job("chain-2", depends_on=(-1,)),
        new_job("chain-3", depends_on=(-2,)),
    )
    assert [(await get(backend, i)).state for i in ids] == [
        JobState.QUEUED,
        JobState.WAITING,
        JobState.WAITING,
    ]
    await run_one(backend, ids[0], "t1")
    assert (await get(backend, ids[1])).state == JobState.QUEUED
    assert (await get(backend, ids[2])).state == JobState.WAITING
    await run_one(backend, ids[1], "t2")
    assert (await get(backend, ids[2])).state == JobState.QUEUED


async def test_unknown_dependencies_refuse_the_whole_enqueue(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("known"))
    with pytest.raises(ValidationError, match="unknown dependency"):
        await backend.enqueue_many(
            EnqueueParams([new_job("fine"), new_job("bad", depends_on=(a, 10**9))], NOW)
        )
    assert (await backend.counts(None))["queued"] == 1  # nothing of that call stored


async def test_a_failed_dependency_cancels_dependents_in_cascade(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("root"))
    [b] = await enqueue(backend, new_job("mid", depends_on=(a,)))
    [c] = await enqueue(backend, new_job("leaf", depends_on=(b,)))
    [d] = await enqueue(
        backend, new_job("runs-anyway", depends_on=(a,), on_dependency_failure="run")
    )
    await run_one(backend, a, "ta", state=JobState.FAILED, error=error())
    for job_id in (b, c):
        job = await get(backend, job_id)
        assert job.state == JobState.CANCELLED and job.finished_at is not None
    events = await backend.get_events(b)
    assert (events[-1].type, dict(events[-1].data)) == (
        "cancelled",
        {"reason": "dependency_failed", "dependency": a},
    )
    assert dict((await backend.get_events(c))[-1].data)["dependency"] == b
    assert (await get(backend, d)).state == JobState.QUEUED


async def test_a_retry_is_not_a_final_failure(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("flaky"))
    [b] = await enqueue(backend, new_job("after-flaky", depends_on=(a,)))
    await run_one(
        backend, a, "t1", state=JobState.QUEUED, run_at=NOW, error=error(), event="retrying"
    )
    assert (await get(backend, b)).state == JobState.WAITING
    await run_one(backend, a, "t2")
    assert (await get(backend, b)).state == JobState.QUEUED


async def test_cancelling_an_upcoming_dependency_cancels_its_dependents(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("will-cancel"))
    [b] = await enqueue(backend, new_job("dependent", depends_on=(a,)))
    assert await backend.cancel(a, NOW) == CancelOutcome.CANCELLED
    assert (await get(backend, b)).state == JobState.CANCELLED


async def test_deleting_an_unfinished_dependency_does_not_strand_dependents(
    backend: Backend,
) -> None:
    [a] = await enqueue(backend, new_job("to-delete"))
    [b] = await enqueue(backend, new_job("stranded?", depends_on=(a,)))
    [c] = await enqueue(backend, new_job("runs", depends_on=(a,), on_dependency_failure="run"))
    await backend.delete_jobs([a], NOW)
    assert (await get(backend, b)).state == JobState.CANCELLED
    assert (await get(backend, c)).state == JobState.QUEUED


async def test_dependencies_already_finished_at_enqueue(backend: Backend) -> None:
    ok, bad = await enqueue(backend, new_job("done-ok"), new_job("done-bad"))
    await run_one(backend, ok, "t1")
    await run_one(backend, bad, "t2", state=JobState.FAILED, error=error())
    [ready] = await enqueue(backend, new_job("ready", depends_on=(ok,)))
    [doomed] = await enqueue(backend, new_job("doomed", depends_on=(ok, bad)))
    assert (await get(backend, ready)).state == JobState.QUEUED
    assert (await get(backend, doomed)).state == JobState.CANCELLED


async def test_concurrent_completions_resolve_a_fan_in_once(store: Store) -> None:
    backends = [await store.connected() for _ in range(3)]
    deps = await enqueue(backends[0], *(new_job(f"fan-{i}") for i in range(6)))
    [sink] = await enqueue(backends[0], new_job("sink", depends_on=tuple(deps)))
    for i, job_id in enumerate(deps):
        assert await claim_ids(backends[0], token=f"t{i}", include=(f"fan-{i}",)) == [job_id]
    await asyncio.gather(
        *(
            backends[i % 3].complete_many([outcome(job_id, f"t{i}")])
            for i, job_id in enumerate(deps)
        )
    )
    assert (await get(backends[0], sink)).state == JobState.QUEUED
    assert (await event_types(backends[0], sink)).count("resumed") == 1


# -- batches ----------------------------------------------------------------------------------
async def test_a_batch_stores_its_callback_once_every_member_finished(backend: Backend) -> None:
    callback = new_job("on-done", options='{"timeout": 5.0}')
    batch = NewBatch("b-1", 3, callback)
    members = [new_job(f"member-{i}", batch_id="b-1") for i in range(3)]
    results = await backend.enqueue_many(EnqueueParams(members, NOW, batch=batch))
    ids = [r.id for r in results]
    record = await backend.get_batch("b-1")
    assert record is not None
    assert (record.total, record.completed, record.failed, record.cancelled, record.state) == (
        3,
        0,
        0,
        0,
        "running",
    )
    assert record.callback_job_id is None
    await run_one(backend, ids[0], "t0")
    await run_one(
        backend, ids[1], "t1", state=JobState.QUEUED, run_at=NOW, error=error(), event="retrying"
    )
    assert (await backend.get_batch("b-1")).completed == 1  # type: ignore[union-attr]
    assert await backend.cancel(ids[2], NOW) == CancelOutcome.CANCELLED
    record = await backend.get_batch("b-1")
    assert record is not None and record.callback_job_id is None  # ids[1] is still retrying
    await run_one(backend, ids[1], "t2", state=JobState.FAILED, error=error())
    record = await backend.get_batch("b-1")
    assert record is not None
    assert (record.completed, record.failed, record.cancelled, record.state) == (1, 1, 1, "done")
    assert record.callback_job_id is not None
    cb = await get(backend, record.callback_job_id)
    assert cb.name == "on-done" and cb.state == JobState.QUEUED and cb.timeout == 5.0
    claimed = await backend.claim(claim_params(token="cb", include=("on-done",)))
    options = json.loads(claimed[0].options or "{}")
    assert options["batch"] == {
        "id": "b-1",
        "total": 3,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }


async def test_a_batch_callback_fires_once_under_concurrent_completions(store: Store) -> None:
    backends = [await store.connected() for _ in range(3)]
    members = [new_job(f"m{i}", batch_id="b-2") for i in range(9)]
    results = await backends[0].enqueue_many(
        EnqueueParams(members, NOW, batch=NewBatch("b-2", 9, new_job("cb")))
    )
    ids = [r.id for r in results]
    for i, job_id in enumerate(ids):
        assert await claim_ids(backends[0], token=f"t{i}", include=(f"m{i}",)) == [job_id]
    await asyncio.gather(
        *(backends[i % 3].complete_many([outcome(job_id, f"t{i}")]) for i, job_id in enumerate(ids))
    )
    record = await backends[0].get_batch("b-2")
    assert record is not None and record.state == "done" and record.completed == 9
    cbs = await backends[0].list_jobs(JobFilter(name="cb"))
    assert len(cbs) == 1 and cbs[0].id == record.callback_job_id


async def test_a_batch_is_all_or_nothing(backend: Backend) -> None:
    members = [new_job("ok", batch_id="b-3"), new_job("bad", batch_id="b-3", depends_on=(10**9,))]
    with pytest.raises(ValidationError):
        await backend.enqueue_many(
            EnqueueParams(members, NOW, batch=NewBatch("b-3", 2, new_job("cb")))
        )
    assert await backend.get_batch("b-3") is None
    assert sum((await backend.counts(None)).values()) == 0


async def test_a_batch_goes_with_its_callback_job(backend: Backend) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            [new_job("solo", batch_id="b-4")], NOW, batch=NewBatch("b-4", 1, new_job("cb4"))
        )
    )
    await run_one(backend, results[0].id, "t")
    record = await backend.get_batch("b-4")
    assert record is not None and record.callback_job_id is not None
    await run_one(backend, record.callback_job_id, "tcb", at=NOW)
    await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 100))
    assert await backend.get_batch("b-4") is None


# -- uniqueness windows -----------------------------------------------------------------------
async def test_unique_for_dedupes_only_within_the_window(backend: Backend) -> None:
    def keyed(**kw: object) -> object:
        return new_job("u", idempotency_key="k1", unique_for=60.0, **kw)

    first = await backend.enqueue_many(EnqueueParams([keyed()], NOW))
    again = await backend.enqueue_many(EnqueueParams([keyed()], NOW + 59))
    assert (again[0].id, again[0].created) == (first[0].id, False)
    later = await backend.enqueue_many(EnqueueParams([keyed()], NOW + 60))
    assert later[0].created and later[0].id != first[0].id
    old = await get(backend, first[0].id)
    assert old.idempotency_key is None and old.state == JobState.QUEUED  # gave up its key only
    assert (await get(backend, later[0].id)).idempotency_key == "k1"


async def test_unique_states_dedupe_only_while_the_first_job_is_in_them(backend: Backend) -> None:
    def keyed() -> object:
        return new_job("s", idempotency_key="k2", unique_states=("queued", "scheduled", "running"))

    [first] = await backend.enqueue_many(EnqueueParams([keyed()], NOW))
    [dup] = await backend.enqueue_many(EnqueueParams([keyed()], NOW + 1))
    assert (dup.id, dup.created) == (first.id, False)
    await run_one(backend, first.id, "t")  # completed: not in the states any more
    [fresh] = await backend.enqueue_many(EnqueueParams([keyed()], NOW + 2))
    assert fresh.created and fresh.id != first.id
