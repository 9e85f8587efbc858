"""Every enqueue option, enqueue_many (all or nothing), enqueue_sync, JobDefinition.enqueue."""

from __future__ import annotations

import asyncio
import gc
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

import conveyor
from conveyor import JobSpec, JobState
from conveyor.testing import ManualClock
from tests.conformance._util import total


async def test_enqueue_stores_a_queued_job_with_defaults(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    job_id = await cq.enqueue("plain", {"k": [1, "two", None, 3.5, True]})
    assert isinstance(job_id, int)
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.id == job_id
    assert job.name == "plain"
    assert job.payload == {"k": [1, "two", None, 3.5, True]}
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.max_attempts == 1
    assert job.priority == 0
    assert job.channel == "default"
    assert job.progress == 0
    assert job.result is None
    assert job.errors == ()
    assert job.last_error is None
    assert job.tags == ()
    assert job.group is None
    assert job.tenant is None
    assert job.run_at == clock.datetime
    assert job.created_at == clock.datetime
    assert job.run_at.tzinfo is not None
    assert job.started_at is None
    assert job.finished_at is None
    assert [e.type for e in await cq.get_job_events(job_id)] == ["enqueued"]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        0,
        "text",
        [1, 2],
        {"nested": {"a": [{}]}},
        "ünïcødé ✓ 名前 🚀",
        {
            "big": 2**62,
            "neg": -(2**53) - 1,
            "f": 0.1 + 0.2,
            "tiny": 1e-300,
            "e": 12345678901234.567,
        },
        {
            "slash": "a/b\\c",
            "quote": "'\"",
            "nul": "\u0000",
            "lua": "]]..x..[[",
            "empty": {},
            "list": [],
        },
    ],
    ids=lambda p: type(p).__name__,
)
async def test_payloads_round_trip(cq: conveyor.Queue, payload: object) -> None:
    job = await cq.get_job(await cq.enqueue("p", payload))
    assert job is not None and job.payload == payload


async def test_ids_are_distinct_and_increasing(cq: conveyor.Queue) -> None:
    ids = [await cq.enqueue("x", i) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


# -- run_at / delay ----------------------------------------------------------------------------
async def test_run_at_in_the_future_is_scheduled(cq: conveyor.Queue, clock: ManualClock) -> None:
    when = clock.datetime + timedelta(minutes=5)
    job = await cq.get_job(await cq.enqueue("later", run_at=when))
    assert job is not None
    assert job.state is JobState.SCHEDULED
    assert job.run_at == when


async def test_run_at_in_another_zone_is_the_same_instant(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    when = (clock.datetime + timedelta(hours=1)).astimezone(
        timezone(timedelta(hours=5, minutes=30))
    )
    job = await cq.get_job(await cq.enqueue("later", run_at=when))
    assert job is not None and job.run_at == when and job.run_at.utcoffset() is not None


async def test_run_at_in_the_past_means_now(cq: conveyor.Queue, clock: ManualClock) -> None:
    job = await cq.get_job(await cq.enqueue("past", run_at=clock.datetime - timedelta(days=3)))
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.run_at == clock.datetime


async def test_naive_run_at_is_refused_and_nothing_stored(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    with pytest.raises(conveyor.ValidationError, match=r"naive|aware"):
        await cq.enqueue("naive", run_at=datetime(2031, 1, 1, 12, 0))
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue("naive", run_at="2031-01-01T00:00:00Z")
    assert await total(cq) == 0


@pytest.mark.parametrize(
    "delay", [90, 90.0, timedelta(seconds=90), timedelta(minutes=1, seconds=30)]
)
async def test_delay_in_seconds_or_timedelta(
    cq: conveyor.Queue, clock: ManualClock, delay: object
) -> None:
    job = await cq.get_job(await cq.enqueue("delayed", delay=delay))
    assert job is not None
    assert job.state is JobState.SCHEDULED
    assert job.run_at == clock.datetime + timedelta(seconds=90)


async def test_zero_delay_is_due_now(cq: conveyor.Queue, clock: ManualClock) -> None:
    job = await cq.get_job(await cq.enqueue("now", delay=0))
    assert job is not None and job.state is JobState.QUEUED and job.run_at == clock.datetime


@pytest.mark.parametrize(
    "delay",
    [-1, -0.001, timedelta(seconds=-5), float("nan"), float("inf"), 10**20, True, "five",
     "7 days", "-1h", "1e400s", "6000w"],
)  # fmt: skip
async def test_bad_delay_is_refused(cq: conveyor.Queue, delay: object) -> None:
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue("bad", delay=delay)
    assert await total(cq) == 0
    assert await cq.list_jobs() == []  # and nothing unreadable was stored


async def test_run_at_and_delay_together_are_refused(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue("both", run_at=clock.datetime + timedelta(seconds=5), delay=5)
    assert await total(cq) == 0


# -- the other options -------------------------------------------------------------------------
@pytest.mark.parametrize("priority", [-32768, -1, 0, 7, 32767])
async def test_priority_range_accepted(cq: conveyor.Queue, priority: int) -> None:
    job = await cq.get_job(await cq.enqueue("p", priority=priority))
    assert job is not None and job.priority == priority


@pytest.mark.parametrize("priority", [-32769, 32768, 10**9, 1.5, "1", True])
async def test_priority_out_of_range_refused(cq: conveyor.Queue, priority: object) -> None:
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue("p", priority=priority)
    assert await total(cq) == 0


async def test_channel_attempts_timeout_tags_group_tenant_are_stored(cq: conveyor.Queue) -> None:
    job_id = await cq.enqueue(
        "full",
        {"x": 1},
        channel="emails",
        attempts=4,
        timeout=12.5,
        tags=["b", "a", "b"],
        group="customer-7",
        tenant="acme",
        backoff=conveyor.Backoff.fixed(3),
        kill_on_timeout=False,
        remove_on_complete=False,
    )
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.channel == "emails"
    assert job.max_attempts == 4
    assert job.timeout == 12.5
    assert job.tags == ("b", "a")  # order kept, duplicates dropped
    assert job.group == "customer-7"
    assert job.tenant == "acme"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("attempts", 0),
        ("attempts", -1),
        ("attempts", 2.5),
        ("attempts", True),
        ("timeout", 0),
        ("timeout", -3),
        ("timeout", "ten"),
        ("timeout", "1e400s"),
        ("timeout", "0s"),
        ("backoff", 5),
        ("backoff", {"kind": "fixed", "base": 1}),
        ("tags", "single-string"),
        ("tags", [1, 2]),
        ("tags", 5),
        ("remove_on_complete", "no"),
        ("kill_on_timeout", "yes"),
        ("channel", ""),
        ("group", 7),
        ("tenant", ""),
        ("idempotency_key", ""),
    ],
)
async def test_bad_options_are_refused_and_nothing_stored(
    cq: conveyor.Queue, option: str, value: object
) -> None:
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue("bad", {"a": 1}, **{option: value})
    assert await total(cq) == 0


async def test_an_unknown_option_is_refused_naming_it_and_nothing_stored(
    cq: conveyor.Queue,
) -> None:
    """Enqueue options are typed keyword parameters (DESIGN.md), so an unknown one is the
    language's own TypeError, naming it, before anything is written."""
    with pytest.raises(TypeError, match="not_an_option"):
        await cq.enqueue("bad", {"a": 1}, not_an_option=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="not_an_option"):
        cq.enqueue_sync("bad", {"a": 1}, not_an_option=1)  # type: ignore[call-arg]
    assert await total(cq) == 0


async def test_definition_defaults_apply_and_options_override(cq: conveyor.Queue) -> None:
    @cq.job(
        "defaults", channel="reports", attempts=3, priority=5, timeout=9, remove_on_complete=False
    )
    async def defaults(payload: object, ctx: conveyor.Context) -> None:
        return None

    job = await cq.get_job(await defaults.enqueue({"a": 1}))
    assert job is not None
    assert (job.channel, job.max_attempts, job.priority) == ("reports", 3, 5)
    job = await cq.get_job(
        await defaults.enqueue({"a": 1}, channel="other", attempts=1, priority=-5, timeout=2)
    )
    assert job is not None
    assert (job.channel, job.max_attempts, job.priority, job.timeout) == ("other", 1, -5, 2)
    # Queue.enqueue by name uses the same definition defaults.
    job = await cq.get_job(await cq.enqueue("defaults", None))
    assert job is not None and (job.channel, job.max_attempts, job.priority) == ("reports", 3, 5)


async def test_enqueue_without_a_registered_handler_is_allowed(cq: conveyor.Queue) -> None:
    """Producers need not import the handlers: defaults apply."""
    job = await cq.get_job(await cq.enqueue("elsewhere", {"a": 1}))
    assert job is not None and job.state is JobState.QUEUED and job.channel == "default"


async def test_remove_on_complete_removes_the_job_at_once(queue: conveyor.Queue) -> None:
    @queue.job("gone")
    async def gone(payload: object, ctx: conveyor.Context) -> int:
        return 1

    @queue.job("kept-by-default", remove_on_complete=True)
    async def kept(payload: object, ctx: conveyor.Context) -> int:
        return 2

    a = await gone.enqueue(None, remove_on_complete=True)
    b = await gone.enqueue(None)
    c = await kept.enqueue(None)
    d = await kept.enqueue(None, remove_on_complete=False)
    assert await queue.worker().run_once() == 4
    assert await queue.get_job(a) is None
    assert (await queue.get_job(b)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert await queue.get_job(c) is None
    assert (await queue.get_job(d)).state is JobState.COMPLETED  # type: ignore[union-attr]


# -- enqueue_many ------------------------------------------------------------------------------
async def test_enqueue_many_returns_ids_in_order(cq: conveyor.Queue) -> None:
    specs = [JobSpec("many", {"i": i}, priority=i, tags=[f"t{i}"]) for i in range(5)]
    ids = await cq.enqueue_many(specs)
    assert len(ids) == 5 and len(set(ids)) == 5
    for i, job_id in enumerate(ids):
        job = await cq.get_job(job_id)
        assert (
            job is not None
            and job.payload == {"i": i}
            and job.priority == i
            and job.tags == (f"t{i}",)
        )


async def test_enqueue_many_empty(cq: conveyor.Queue) -> None:
    assert await cq.enqueue_many([]) == []
    assert await total(cq) == 0


@pytest.mark.parametrize(
    "bad",
    [
        JobSpec("ok", object()),
        JobSpec("ok", None, priority=99999),
        JobSpec("ok", None, delay=-1),
        JobSpec("", None),
        JobSpec("ok", None, tags=["fine", "bad\nline"]),
        JobSpec("ok", None, run_at=datetime(2030, 1, 1)),
        {"name": "not-a-spec"},
    ],
)
async def test_enqueue_many_is_all_or_nothing(cq: conveyor.Queue, bad: object) -> None:
    await cq.enqueue("before", None)
    specs = [JobSpec("ok", {"i": 1}), JobSpec("ok", {"i": 2}), bad, JobSpec("ok", {"i": 3})]
    with pytest.raises(conveyor.ValidationError):
        await cq.enqueue_many(specs)  # type: ignore[arg-type]
    assert await total(cq) == 1
    assert await cq.list_jobs(name="ok") == []


async def test_enqueue_many_same_idempotency_key_twice_in_one_batch(cq: conveyor.Queue) -> None:
    a, b, c = await cq.enqueue_many(
        [
            JobSpec("k", 1, idempotency_key="same"),
            JobSpec("k", 2, idempotency_key="same"),
            JobSpec("k", 3),
        ]
    )
    assert a == b != c
    assert await total(cq) == 2
    job = await cq.get_job(a)
    assert job is not None and job.payload == 1


# -- sync entry points ---------------------------------------------------------------------------
async def test_enqueue_sync_from_a_worker_thread(queue: conveyor.Queue) -> None:
    job_id = await asyncio.to_thread(
        queue.enqueue_sync, "sync-job", {"from": "thread"}, priority=3, tags=["s"]
    )
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.payload == {"from": "thread"} and job.priority == 3 and job.tags == ("s",)
    assert job.state is JobState.QUEUED


async def test_enqueue_sync_from_plain_threads_without_a_loop(queue: conveyor.Queue) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def produce(i: int) -> None:
        try:
            results.append(queue.enqueue_sync("sync-job", {"i": i}))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join(30) for t in threads])
    assert errors == []
    assert len(set(results)) == 5
    payloads = sorted(j.payload["i"] for j in await queue.list_jobs(name="sync-job"))
    assert payloads == [0, 1, 2, 3, 4]


async def test_enqueue_sync_refuses_bad_input_and_stores_nothing(queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.PayloadError):
        await asyncio.to_thread(queue.enqueue_sync, "sync-job", {"bad": {1, 2}})
    with pytest.raises(conveyor.ValidationError):
        await asyncio.to_thread(queue.enqueue_sync, "sync-job", None, delay=-1)
    assert await total(queue) == 0


async def test_enqueue_sync_and_the_worker_share_the_store(queue: conveyor.Queue) -> None:
    seen: list[object] = []

    @queue.job("sync-run")
    async def run(payload: object, ctx: conveyor.Context) -> None:
        seen.append(payload)

    job_id = await asyncio.to_thread(run.enqueue_sync, {"n": 1})
    assert await queue.worker().run_once() == 1
    assert seen == [{"n": 1}]
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED


async def test_enqueue_sync_on_a_fresh_queue_then_close_leaks_nothing(store) -> None:
    """The sync entry point's helper loop/thread is closed with the queue (an unclosed
    event loop would surface as a ResourceWarning at some later, unrelated moment)."""
    q = store.queue()
    job_id = await asyncio.to_thread(q.enqueue_sync, "fresh", {"a": 1})
    job = await q.get_job(job_id)
    assert job is not None and job.payload == {"a": 1}
    await q.close()
    gc.collect()  # any unclosed loop or socket is reported here, in this test


async def test_job_definition_enqueue(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("welcome", channel="emails", attempts=2)
    async def welcome(payload: object, ctx: conveyor.Context) -> None:
        return None

    job_id = await welcome.enqueue({"email": "a@b.c"}, delay=5, tenant="t1")
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.name == "welcome"
    assert job.payload == {"email": "a@b.c"}
    assert job.state is JobState.SCHEDULED
    assert job.run_at == clock.datetime + timedelta(seconds=5)
    assert (job.channel, job.max_attempts, job.tenant) == ("emails", 2, "t1")


async def test_enqueued_callback_fires_for_new_jobs_only(cq: conveyor.Queue) -> None:
    seen: list[conveyor.Event] = []
    cq.on("enqueued", seen.append)
    a = await cq.enqueue("e", None, idempotency_key="k", tenant="t")
    assert await cq.enqueue("e", None, idempotency_key="k", tenant="t") == a
    assert [(e.type, e.job_id, e.job_name, e.tenant, e.attempt) for e in seen] == [
        ("enqueued", a, "e", "t", 0)
    ]
    assert seen[0].at.tzinfo is not None and seen[0].at.astimezone(UTC)
