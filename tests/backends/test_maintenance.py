"""Maintenance verbs: promote_due, prune, acquire_lock (expired_leases: test_leases)."""

from __future__ import annotations

from conveyor.backends.base import (
    Backend,
    EnqueueParams,
    JobFilter,
    LockParams,
    LogEntry,
    PromoteParams,
    PromoteResult,
    PruneParams,
    RemovedJob,
)
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    enqueue,
    finish,
    new_job,
    state_of,
)

# -- promote_due --------------------------------------------------------------------------


async def test_promote_moves_due_scheduled_jobs_to_queued(backend: Backend) -> None:
    soon, later, far, queued = await enqueue(
        backend,
        new_job(run_at=NOW + 5),
        new_job(run_at=NOW + 10),
        new_job(run_at=NOW + 100),
        new_job(),
    )
    assert await backend.promote_due(PromoteParams(NOW, 0, 100)) == PromoteResult(0, None)
    # horizon: jobs due within the next 10 s are promoted ahead of time
    result = await backend.promote_due(PromoteParams(NOW + 5, 10, 100))
    assert result == PromoteResult(2, NOW + 10)  # NOW + 5 is not after now: not "future"
    assert [await state_of(backend, i) for i in (soon, later, far, queued)] == [
        "queued",
        "queued",
        "scheduled",
        "queued",
    ]
    # promoted ahead of time, the job still waits for its run_at to be claimed
    assert await claim_ids(backend, now=NOW + 5) == [queued, soon]
    assert await claim_ids(backend, now=NOW + 9) == []
    assert await claim_ids(backend, now=NOW + 10) == [later]
    assert await backend.promote_due(PromoteParams(NOW + 200, 0, 100)) == PromoteResult(1, None)
    assert await state_of(backend, far) == "queued"


async def test_promote_honours_limit(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job(run_at=NOW + 1 + i) for i in range(3)))
    assert (await backend.promote_due(PromoteParams(NOW + 10, 0, 2))).count == 2
    assert sorted([await state_of(backend, i) for i in ids]) == ["queued", "queued", "scheduled"]
    assert await backend.promote_due(PromoteParams(NOW + 10, 0, 2)) == PromoteResult(1, None)
    assert await backend.promote_due(PromoteParams(NOW + 10, 0, 2)) == PromoteResult(0, None)


async def test_promote_touches_only_scheduled_jobs(backend: Backend) -> None:
    waiting, running = await enqueue(backend, new_job("w"), new_job("r"))
    await claim(backend, token="t")
    await finish(backend, waiting, "t", state=JobState.WAITING, run_at=NOW + 1, event="waiting")
    assert await backend.promote_due(PromoteParams(NOW + 50, 0, 100)) == PromoteResult(0, None)
    assert [await state_of(backend, i) for i in (waiting, running)] == ["waiting", "running"]


# -- prune --------------------------------------------------------------------------------


async def _finished(backend: Backend, state: JobState, at: float, **kw: object) -> int:
    """One job that ended in ``state`` at ``at``, with an event and a log line."""
    name = f"{state.value}-{at}"
    [job_id] = await enqueue(backend, new_job(name, **kw))
    assert await claim_ids(backend, token="t", include=(name,)) == [job_id]
    await backend.append_logs([LogEntry(job_id, "t", at, "info", "hello", 1)])
    await finish(backend, job_id, "t", state=state, at=at)
    return job_id


async def test_prune_deletes_finished_jobs_before_the_cutoff(backend: Backend) -> None:
    c1 = await _finished(backend, JobState.COMPLETED, NOW + 1)
    c2 = await _finished(backend, JobState.COMPLETED, NOW + 2, tenant="acme")
    c3 = await _finished(backend, JobState.COMPLETED, NOW + 3)  # not before the cutoff
    f1 = await _finished(backend, JobState.FAILED, NOW + 1)  # another state
    [queued] = await enqueue(backend, new_job())
    pruned = await backend.prune(PruneParams(JobState.COMPLETED, NOW + 3, 100))
    assert pruned.count == 2
    # what was removed, read in the same statement / script: for the `removed` events
    assert sorted(pruned.removed, key=lambda r: r.id) == [
        RemovedJob(c1, f"completed-{NOW + 1}", None, 1),
        RemovedJob(c2, f"completed-{NOW + 2}", "acme", 1),
    ]
    for gone in (c1, c2):
        assert await backend.get_job(gone) is None
        assert await backend.get_events(gone) == []
        assert await backend.get_logs(gone) == []
    for kept in (c3, f1):
        assert await backend.get_job(kept) is not None
        assert [e.type for e in await backend.get_events(kept) if e.type == "started"]
        assert len(await backend.get_logs(kept)) == 1
    assert await state_of(backend, queued) == "queued"
    counts = await backend.counts(None)
    assert (counts["completed"], counts["failed"], counts["queued"]) == (1, 1, 1)
    assert [j.id for j in await backend.list_jobs(JobFilter(state=JobState.COMPLETED))] == [c3]


async def test_prune_honours_limit_and_state(backend: Backend) -> None:
    ids = [await _finished(backend, JobState.CANCELLED, NOW + i) for i in range(3)]
    await _finished(backend, JobState.COMPLETED, NOW)
    assert (await backend.prune(PruneParams(JobState.CANCELLED, NOW + 100, 2))).count == 2
    assert (await backend.prune(PruneParams(JobState.CANCELLED, NOW + 100, 2))).count == 1
    assert (await backend.prune(PruneParams(JobState.CANCELLED, NOW + 100, 2))).count == 0
    assert [await backend.get_job(i) for i in ids] == [None, None, None]
    assert (await backend.counts(None))["completed"] == 1


async def test_prune_never_touches_upcoming_or_running_jobs(backend: Backend) -> None:
    queued, scheduled, running = await enqueue(
        backend, new_job("q"), new_job("s", run_at=NOW + 5), new_job("r", channel="r")
    )
    await claim(backend, channels=("r",))
    for state in JobState:
        await backend.prune(PruneParams(state, NOW + 10_000, 100))
    assert [await state_of(backend, i) for i in (queued, scheduled, running)] == [
        "queued",
        "scheduled",
        "running",
    ]


async def test_a_pruned_job_frees_its_idempotency_key(backend: Backend) -> None:
    job_id = await _finished(backend, JobState.COMPLETED, NOW, idempotency_key="k")
    [same] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert (same.id, same.created) == (job_id, False)
    assert (await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 10))).count == 1
    [fresh] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert fresh.created and fresh.id != job_id


# -- acquire_lock -------------------------------------------------------------------------


def lock(owner: str, now: float, ttl: float = 10, name: str = "maintenance") -> LockParams:
    return LockParams(name=name, owner=owner, ttl=ttl, now=now)


async def test_a_lock_is_exclusive_until_its_ttl(backend: Backend) -> None:
    assert await backend.acquire_lock(lock("a", NOW)) is True  # until NOW + 10
    assert await backend.acquire_lock(lock("b", NOW + 1)) is False
    assert await backend.acquire_lock(lock("b", NOW + 9.5)) is False
    assert await backend.acquire_lock(lock("b", NOW + 10.5)) is True  # a's expired
    assert await backend.acquire_lock(lock("a", NOW + 11)) is False  # now b's


async def test_the_owner_renews_its_lock(backend: Backend) -> None:
    assert await backend.acquire_lock(lock("a", NOW)) is True
    assert await backend.acquire_lock(lock("a", NOW + 8)) is True  # until NOW + 18
    assert await backend.acquire_lock(lock("b", NOW + 15)) is False
    assert await backend.acquire_lock(lock("a", NOW + 17)) is True  # until NOW + 27
    assert await backend.acquire_lock(lock("b", NOW + 26)) is False
    assert await backend.acquire_lock(lock("b", NOW + 27.5)) is True


async def test_locks_are_independent_by_name(backend: Backend) -> None:
    assert await backend.acquire_lock(lock("a", NOW, name="one")) is True
    assert await backend.acquire_lock(lock("b", NOW, name="two")) is True
    assert await backend.acquire_lock(lock("b", NOW, name="one")) is False


async def test_a_lock_is_shared_by_every_instance(backend: Backend, store: Store) -> None:
    other = await store.connected()  # like another process
    assert await backend.acquire_lock(lock("a", NOW)) is True
    assert await other.acquire_lock(lock("b", NOW + 1)) is False
    assert await other.acquire_lock(lock("a", NOW + 1)) is True  # an owner, not an instance
