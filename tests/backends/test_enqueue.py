"""enqueue_many and enqueue_many_sync: ids in order, every field stored, all or nothing,
tenant-scoped idempotency keys, and the sync path per capability flag."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from conveyor.backends.base import Backend, EnqueueParams, EnqueueResult, JobFilter
from conveyor.errors import UnsupportedError
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, claim_params, enqueue, get, new_job, ts


async def test_ids_come_back_in_order_and_every_field_is_stored(backend: Backend) -> None:
    jobs = [
        new_job(
            "a",
            payload='{"b": [1, 2],  "a": "x"}',  # opaque JSON text: kept byte for byte
            priority=-5,
            channel="mail",
            max_attempts=7,
            options='{"timeout": 12.5}',
            remove_on_complete=True,
            idempotency_key="key-a",
            tags=("t1", "t2"),
            group="g",
            tenant="acme",
        ),
        new_job("b", state=JobState.SCHEDULED, run_at=NOW + 60),
        new_job("c"),
    ]
    results = await backend.enqueue_many(EnqueueParams(jobs, NOW - 1))
    assert all(isinstance(r, EnqueueResult) and r.created for r in results)
    ids = [r.id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 3

    a = await get(backend, ids[0])
    assert (a.id, a.name, a.payload, a.state) == (ids[0], "a", {"b": [1, 2], "a": "x"}, "queued")
    assert (a.priority, a.channel, a.max_attempts, a.timeout) == (-5, "mail", 7, 12.5)
    assert (a.idempotency_key, a.tags, a.group, a.tenant) == ("key-a", ("t1", "t2"), "g", "acme")
    assert (a.attempts, a.progress, a.result, a.errors, a.last_error) == (0, 0, None, (), None)
    assert (ts(a.run_at), ts(a.created_at), a.started_at, a.finished_at) == (
        NOW,
        NOW - 1,
        None,
        None,
    )
    [claimed] = await claim_ids(backend, limit=1)
    assert claimed == ids[0]  # priority -5 first

    b = await get(backend, ids[1])
    assert (b.state, ts(b.run_at), b.tags, b.group, b.tenant) == (
        "scheduled",
        NOW + 60,
        (),
        None,
        None,
    )
    assert (b.idempotency_key, b.timeout) == (None, None)


async def test_an_empty_batch_stores_nothing(backend: Backend) -> None:
    assert await backend.enqueue_many(EnqueueParams([], NOW)) == []
    assert sum((await backend.counts(None)).values()) == 0


async def test_the_payload_text_reaches_the_claim_unchanged(backend: Backend) -> None:
    text = '{"z":1,  "a" : [true, null, 1.50]}'
    await enqueue(backend, new_job(payload=text))
    [job] = await backend.claim(claim_params())
    assert job.payload == text


async def test_queued_jobs_are_claimable_and_scheduled_ones_are_not(backend: Backend) -> None:
    queued, scheduled = await enqueue(
        backend, new_job("now"), new_job("later", state=JobState.SCHEDULED, run_at=NOW + 5)
    )
    assert [(await get(backend, i)).state for i in (queued, scheduled)] == ["queued", "scheduled"]
    assert await claim_ids(backend, now=NOW + 10) == [queued]  # scheduled waits for promotion


async def test_a_batch_is_all_or_nothing(backend: Backend) -> None:
    bad = new_job("bad", payload=object())  # no store can keep this: the batch fails
    with pytest.raises(Exception):  # noqa: B017, PT011 - the contract names no error type
        await backend.enqueue_many(EnqueueParams([new_job("a"), new_job("b"), bad], NOW))
    assert sum((await backend.counts(None)).values()) == 0
    assert await backend.list_jobs(JobFilter()) == []
    [job_id] = await enqueue(backend, new_job("after"))  # the store still works
    assert (await get(backend, job_id)).name == "after"


async def test_an_idempotency_key_returns_the_existing_job(backend: Backend) -> None:
    [first] = await backend.enqueue_many(EnqueueParams([new_job("a", idempotency_key="k")], NOW))
    assert first.created
    [again] = await backend.enqueue_many(
        EnqueueParams([new_job("other", idempotency_key="k", payload='{"n": 2}')], NOW + 1)
    )
    assert again == EnqueueResult(first.id, False)
    job = await get(backend, first.id)
    assert (job.name, job.payload) == ("a", {"n": 1})  # the first one, untouched
    assert sum((await backend.counts(None)).values()) == 1


async def test_idempotency_keys_are_scoped_by_tenant(backend: Backend) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            [
                new_job(idempotency_key="k"),
                new_job(idempotency_key="k", tenant="t1"),
                new_job(idempotency_key="k", tenant="t2"),
            ],
            NOW,
        )
    )
    assert [r.created for r in results] == [True, True, True]
    assert len({r.id for r in results}) == 3
    again = await backend.enqueue_many(
        EnqueueParams(
            [
                new_job(idempotency_key="k", tenant="t2"),
                new_job(idempotency_key="k"),
                new_job(idempotency_key="k", tenant="t1"),
            ],
            NOW,
        )
    )
    assert again == [
        EnqueueResult(results[2].id, False),
        EnqueueResult(results[0].id, False),
        EnqueueResult(results[1].id, False),
    ]


async def test_a_key_repeated_within_one_batch_makes_one_job(backend: Backend) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            [new_job("a", idempotency_key="k"), new_job("b"), new_job("c", idempotency_key="k")],
            NOW,
        )
    )
    assert [r.created for r in results] == [True, True, False]
    assert results[2].id == results[0].id and results[1].id != results[0].id
    assert sum((await backend.counts(None)).values()) == 2


async def test_a_finished_job_still_holds_its_key(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job(idempotency_key="k"))
    assert await backend.cancel(job_id, NOW) == "cancelled"
    [again] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert again == EnqueueResult(job_id, False)


# -- enqueue_many_sync --------------------------------------------------------------------


def _in_plain_thread(fn: Any) -> Any:
    """Run ``fn()`` in a new thread with no event loop; its result or its exception."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "enqueue_many_sync hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


async def test_sync_enqueue_per_capability_flag(backend: Backend, store: Store) -> None:
    jobs = [new_job("s1"), new_job("s2", idempotency_key="sk")]
    if type(backend).sync_enqueue:
        fresh = store.build()  # never connected: enqueue_many_sync connects by itself
        results = _in_plain_thread(lambda: fresh.enqueue_many_sync(EnqueueParams(jobs, NOW)))
        assert [r.created for r in results] == [True, True]
        assert [(await get(backend, r.id)).name for r in results] == ["s1", "s2"]
        again = _in_plain_thread(
            lambda: fresh.enqueue_many_sync(EnqueueParams([new_job(idempotency_key="sk")], NOW))
        )
        assert again == [EnqueueResult(results[1].id, False)]
    else:
        with pytest.raises(UnsupportedError):
            _in_plain_thread(lambda: backend.enqueue_many_sync(EnqueueParams(jobs, NOW)))
        assert sum((await backend.counts(None)).values()) == 0


async def test_caller_transactions_per_capability_flag(backend: Backend, store: Store) -> None:
    """``supports_transactions``: the job is part of the caller's transaction (sync
    connection, through enqueue_many_sync); otherwise ``connection=`` is refused."""
    if not type(backend).supports_transactions:
        with pytest.raises(UnsupportedError):
            await backend.enqueue_many(EnqueueParams([new_job()], NOW, connection=object()))
        with pytest.raises(UnsupportedError):
            backend.enqueue_many_sync(EnqueueParams([new_job()], NOW, connection=object()))
        assert sum((await backend.counts(None)).values()) == 0
        return
    conn = store.caller_connection()
    assert conn is not None, f"{store.kind} supports transactions: give the test a connection"
    try:
        [rolled] = backend.enqueue_many_sync(
            EnqueueParams([new_job("rolled", idempotency_key="k")], NOW, connection=conn)
        )
        assert rolled.created
        conn.rollback()
        assert await backend.get_job(rolled.id) is None
        [kept] = backend.enqueue_many_sync(
            EnqueueParams([new_job("kept", idempotency_key="k")], NOW, connection=conn)
        )
        assert kept.created  # the rolled-back key is free again
        assert await backend.get_job(kept.id) is None  # not committed yet: invisible
        conn.commit()
        assert (await get(backend, kept.id)).name == "kept"
    finally:
        conn.close()


async def _call(result: Any) -> None:
    """Await ``result`` if the driver's commit/rollback/close was a coroutine."""
    if asyncio.iscoroutine(result):
        await result


async def test_caller_transactions_on_the_async_path(backend: Backend, store: Store) -> None:
    if not type(backend).supports_transactions:
        return  # refused above
    conn = await store.async_caller_connection()
    try:
        [rolled] = await backend.enqueue_many(
            EnqueueParams([new_job("rolled", idempotency_key="k")], NOW, connection=conn)
        )
        await _call(conn.rollback())
        assert await backend.get_job(rolled.id) is None
        [kept] = await backend.enqueue_many(
            EnqueueParams([new_job("kept", idempotency_key="k")], NOW, connection=conn)
        )
        assert kept.created
        assert await backend.get_job(kept.id) is None
        await _call(conn.commit())
        assert (await get(backend, kept.id)).name == "kept"
    finally:
        await _call(conn.close())
