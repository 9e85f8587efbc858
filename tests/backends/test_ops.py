"""The operations surface's verbs: the worker registry, the pause state, throughput,
name-prefix filters, deleting jobs, and the id (cursor) of every read event."""

from __future__ import annotations

import dataclasses

from conveyor.backends.base import (
    Backend,
    EventRead,
    JobFilter,
    NewToken,
    StepSave,
    ThroughputParams,
    WorkerRecord,
)
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, enqueue, error, finish, new_job


def worker(
    worker_id: str, started: float = NOW, expires: float = NOW + 30, **kw: object
) -> WorkerRecord:
    fields: dict[str, object] = {
        "id": worker_id,
        "host": "host-1",
        "pid": 4242,
        "channels": ("emails", "é"),
        "concurrency": 10,
        "running": (),
        "started_at": started,
        "last_seen": started,
        "expires_at": expires,
    }
    fields.update(kw)
    return WorkerRecord(**fields)  # type: ignore[arg-type]


# -- the worker registry ------------------------------------------------------------------------
async def test_registered_workers_are_listed_until_they_expire(backend: Backend) -> None:
    await backend.register_worker(worker("w-b", started=NOW + 1))
    await backend.register_worker(worker("w-a", channels=None, running=(3, 5)))
    listed = await backend.list_workers(NOW)
    assert [w.id for w in listed] == ["w-a", "w-b"]  # by started_at
    assert listed[0] == worker("w-a", channels=None, running=(3, 5))
    assert listed[1].channels == ("emails", "é")
    assert [w.id for w in await backend.list_workers(NOW + 30)] == []  # expired: gone


async def test_a_heartbeat_replaces_the_record(backend: Backend) -> None:
    await backend.register_worker(worker("w1"))
    beat = dataclasses.replace(worker("w1", running=(7,), expires=NOW + 60), last_seen=NOW + 20)
    await backend.register_worker(beat)
    [listed] = await backend.list_workers(NOW + 45)
    assert (listed.running, listed.last_seen, listed.expires_at, listed.started_at) == (
        (7,),
        NOW + 20,
        NOW + 60,
        NOW,
    )


async def test_a_removed_worker_is_not_listed(backend: Backend, store: Store) -> None:
    await backend.register_worker(worker("w1"))
    await backend.register_worker(worker("w2"))
    other = await store.connected()  # another process sees the same registry
    await other.remove_worker("w1")
    await other.remove_worker("never-registered")
    assert [w.id for w in await backend.list_workers(NOW)] == ["w2"]


# -- pause state ------------------------------------------------------------------------------------
async def test_paused_state_reports_what_set_paused_stored(backend: Backend) -> None:
    state = await backend.paused_state()
    assert (state.everything, state.channels) == (False, frozenset())
    await backend.set_paused("emails", True)
    await backend.set_paused("*", True)
    state = await backend.paused_state()
    assert (state.everything, state.channels) == (False, frozenset({"emails", "*"}))
    await backend.set_paused(None, True)
    assert (await backend.paused_state()).everything is True
    await backend.set_paused(None, False)
    state = await backend.paused_state()
    assert (state.everything, state.channels) == (False, frozenset())


# -- throughput -------------------------------------------------------------------------------------
async def test_throughput_counts_finished_jobs_per_bucket_and_state(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job(f"t{i}") for i in range(6)))
    for i, job_id in enumerate(ids):
        assert await claim_ids(backend, token=f"k{i}", include=(f"t{i}",)) == [job_id]
    plan = [
        (NOW + 5, JobState.COMPLETED),
        (NOW + 59.9, JobState.COMPLETED),
        (NOW + 60, JobState.FAILED),
        (NOW + 61, JobState.CANCELLED),
        (NOW + 130, JobState.COMPLETED),
        (NOW + 200, JobState.COMPLETED),  # after the last bucket
    ]
    for i, (job_id, (at, state)) in enumerate(zip(ids, plan, strict=True)):
        await finish(
            backend,
            job_id,
            f"k{i}",
            state=state,
            at=at,
            error=error() if state == JobState.FAILED else None,
        )
    buckets = await backend.throughput(ThroughputParams(since=NOW, bucket=60, buckets=3))
    counts = {b.index: (b.completed, b.failed, b.cancelled) for b in buckets}
    assert {i: c for i, c in counts.items() if c != (0, 0, 0)} == {
        0: (2, 0, 0),
        1: (0, 1, 1),
        2: (1, 0, 0),
    }
    later = await backend.throughput(ThroughputParams(since=NOW + 1000, bucket=60, buckets=5))
    assert all((b.completed, b.failed, b.cancelled) == (0, 0, 0) for b in later)


# -- name prefix ------------------------------------------------------------------------------------
async def test_name_prefix_filters_literally(backend: Backend) -> None:
    ids = await enqueue(
        backend,
        new_job("report.daily"),
        new_job("report.weekly"),
        new_job("reports"),
        new_job("r%port"),
        new_job("r_port"),
        new_job("étape-1"),
    )
    by = dict(zip(["daily", "weekly", "reports", "pct", "under", "etape"], ids, strict=True))

    async def names(prefix: str) -> set[int]:
        return {j.id for j in await backend.list_jobs(JobFilter(name_prefix=prefix))}

    assert await names("report.") == {by["daily"], by["weekly"]}
    assert await names("report") == {by["daily"], by["weekly"], by["reports"]}
    assert await names("r%") == {by["pct"]}
    assert await names("r_") == {by["under"]}
    assert await names("étape") == {by["etape"]}
    assert await names("zzz") == set()
    assert await backend.cancel_jobs(JobFilter(name_prefix="report."), NOW) == 2


# -- delete -----------------------------------------------------------------------------------------
async def test_delete_jobs_removes_what_is_not_running(backend: Backend) -> None:
    queued, running, done = await enqueue(backend, new_job("q"), new_job("r"), new_job("d"))
    assert await claim_ids(backend, token="tr", include=("r",)) == [running]
    assert await claim_ids(backend, token="td", include=("d",)) == [done]
    assert await backend.save_step(StepSave(done, "td", "s", "1", NOW, NewToken("del-tok", None)))
    await finish(backend, done, "td")
    removed = await backend.delete_jobs([queued, running, done, 10**9], NOW)
    assert sorted(r.id for r in removed) == [queued, done]
    assert {r.name for r in removed} == {"q", "d"}
    assert await backend.get_job(queued) is None and await backend.get_job(done) is None
    assert await backend.get_events(done) == [] and await backend.get_logs(done) == []
    assert await backend.load_steps(done) == [] and await backend.get_token("del-tok") is None
    job = await backend.get_job(running)
    assert job is not None and job.state == JobState.RUNNING
    counts = await backend.counts(None)
    assert (counts["queued"], counts["completed"], counts["running"]) == (0, 0, 1)
    assert await claim_ids(backend, token="again") == []  # the deleted queued job is not claimable
    assert await backend.delete_jobs([], NOW) == []


# -- event ids ---------------------------------------------------------------------------------------
async def test_every_read_event_carries_a_cursor_that_resumes_after_it(backend: Backend) -> None:
    start = (await backend.read_events(EventRead(None, 0, 0))).cursor
    ids = await enqueue(backend, new_job("e1"), new_job("e2"), new_job("e3"))
    seen = []
    cursor = start
    while len(seen) < 3:
        page = await backend.read_events(EventRead(cursor, 10, 5))
        seen += page.events
        cursor = page.cursor
    assert [(e.type, e.job_id) for e in seen] == [("enqueued", i) for i in ids]
    assert all(isinstance(e.id, str) and e.id for e in seen)
    resumed = await backend.read_events(EventRead(seen[0].id, 10, 5))
    assert [e.job_id for e in resumed.events] == ids[1:]
    resumed = await backend.read_events(EventRead(seen[1].id, 10, 5))
    assert [e.job_id for e in resumed.events] == ids[2:]
