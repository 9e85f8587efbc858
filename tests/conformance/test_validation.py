"""Bad input is refused with a clear ConveyorError subclass before anything is written;
accepted names round-trip exactly and never reach SQL or Lua as code."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

import conveyor
from conveyor import JobSpec, JobState
from tests.conformance._util import total


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        (object(), "JSON"),
        ({"s": {1, 2}}, "JSON"),
        (b"bytes", "JSON"),
        ({"when": datetime(2030, 1, 1)}, "JSON"),
        ({"x": math.nan}, "JSON"),
        ({"x": math.inf}, "JSON"),
        ({1j: "complex key"}, "JSON"),
    ],
)
async def test_non_json_payload_is_refused(
    queue: conveyor.Queue, payload: object, hint: str
) -> None:
    with pytest.raises(conveyor.PayloadError, match=hint) as info:
        await queue.enqueue("p", payload)
    assert isinstance(info.value, conveyor.ValidationError)
    assert isinstance(info.value, conveyor.ConveyorError)
    assert await total(queue) == 0


async def test_oversize_payload_is_refused_at_the_utf8_byte_limit(store) -> None:
    q = store.queue(max_payload_bytes=100)
    await q.migrate()
    # '"' + 98 chars + '"' is exactly 100 bytes of JSON: accepted.
    assert await q.enqueue("p", "x" * 98)
    with pytest.raises(conveyor.PayloadError, match="100"):
        await q.enqueue("p", "x" * 99)
    # Sizes are UTF-8 bytes, not characters: 49 two-byte characters + 2 quotes = 100.
    assert await q.enqueue("p", "é" * 49)
    with pytest.raises(conveyor.PayloadError):
        await q.enqueue("p", "é" * 50)
    with pytest.raises(conveyor.PayloadError):
        await q.enqueue_many([JobSpec("p", 1), JobSpec("p", "y" * 500)])
    assert await total(q) == 2


async def test_oversize_payload_refused_from_sync_code(store) -> None:
    import asyncio

    q = store.queue(max_payload_bytes=50)
    await q.migrate()
    with pytest.raises(conveyor.PayloadError):
        await asyncio.to_thread(q.enqueue_sync, "p", {"blob": "z" * 100})
    assert await total(q) == 0


BAD_NAMES = [
    "",
    "a\x00b",
    "tab\there",
    "new\nline",
    "cr\r",
    "del\x7f",
    "\x1b[31mred",
    123,
    None,
    b"bytes",
    "x" * 201,
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_unsafe_job_names_are_refused(queue: conveyor.Queue, name: object) -> None:
    with pytest.raises(conveyor.ValidationError):
        await queue.enqueue(name, None)  # type: ignore[arg-type]
    assert await total(queue) == 0


@pytest.mark.parametrize("field", ["channel", "group", "tenant", "idempotency_key"])
@pytest.mark.parametrize("value", ["", "a\x00b", "new\nline", "del\x7f", 42])
async def test_unsafe_option_names_are_refused(
    queue: conveyor.Queue, field: str, value: object
) -> None:
    with pytest.raises(conveyor.ValidationError):
        await queue.enqueue("ok", None, **{field: value})
    assert await total(queue) == 0


@pytest.mark.parametrize("tag", ["", "a\x00b", "new\nline", 42, None])
async def test_unsafe_tags_are_refused(queue: conveyor.Queue, tag: object) -> None:
    with pytest.raises(conveyor.ValidationError):
        await queue.enqueue("ok", None, tags=["fine", tag])
    assert await total(queue) == 0


def test_unsafe_names_refused_at_registration(store) -> None:
    q = store.queue()
    for bad in ("", "a\nb", 5):
        with pytest.raises(conveyor.ValidationError):
            q.job(bad)(lambda p, c: None)  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError):
        q.job("fine", channel="bad\x00channel")(lambda p, c: None)
    with pytest.raises(conveyor.ValidationError):
        q.job("fine", attempts=0)(lambda p, c: None)
    with pytest.raises(conveyor.ValidationError):
        q.job("fine", priority=40000)(lambda p, c: None)
    with pytest.raises(conveyor.ValidationError):
        q.job("fine", backoff=3)(lambda p, c: None)
    for flag in ("remove_on_complete", "remove_on_fail", "kill_on_timeout"):
        with pytest.raises(conveyor.ValidationError, match=flag):
            q.job("fine", **{flag: "yes"})(lambda p, c: None)
    q.job("fine")(lambda p, c: None)
    with pytest.raises(conveyor.ValidationError):
        q.job("fine")(lambda p, c: None)  # registered twice


@pytest.mark.parametrize(
    "bad", ["", "has space", "semi;colon", "1starts_with_digit", 'quo"te', "a" * 49, "dash-ed"]
)
def test_unsafe_schema_and_prefix_are_refused(store, bad: str) -> None:
    with pytest.raises(conveyor.ValidationError):
        conveyor.Queue(store.url, schema=bad)
    with pytest.raises(conveyor.ValidationError):
        conveyor.Queue(store.url, prefix=bad)


def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(conveyor.ValidationError):
        conveyor.Queue("mysql://localhost/db")


def test_bad_worker_options_are_refused(queue: conveyor.Queue) -> None:
    for kwargs in (
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"channels": "emails"},
        {"include": "job"},
        {"exclude": "job"},
        {"channels": ["bad\nchannel"]},
        {"timeout": 0},
        {"timeout": -1},
        {"drain_timeout": -1},
    ):
        with pytest.raises(conveyor.ValidationError):
            queue.worker(**kwargs)  # type: ignore[arg-type]


async def test_bad_query_arguments_are_refused(queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.ValidationError):
        await queue.list_jobs(state="exploded")
    with pytest.raises(conveyor.ValidationError):
        await queue.list_jobs(tags=["a"], tag_mode="some")
    with pytest.raises(conveyor.ValidationError):
        await queue.list_jobs(limit=0)
    with pytest.raises(conveyor.ValidationError):
        await queue.cancel_jobs(tags=["a"], tag_mode="most")
    with pytest.raises(conveyor.ValidationError):
        await queue.clean(state="running")
    with pytest.raises(conveyor.ValidationError):
        await queue.pause("bad\nchannel")
    with pytest.raises(conveyor.ValidationError):
        queue.on("exploded", lambda e: None)


UNICODE = ["émoji-🚀-名前", "ジョブ", "Ωmega", "Ø", "\u200bzero-width", "a b c", "עברית", "👩‍👩‍👧"]
HOSTILE = [
    "'; DROP TABLE x; --",
    '"]]',
    "KEYS[1]",
    "ARGV[1]",
    "%s",
    "%(name)s",
    "{prefix}",
    ":name",
    "?",
    "*",
    "ready:default",
    "job:1",
    "conveyor_jobs",
    "\\",
    "' OR '1'='1",
    "]]..redis.call('FLUSHALL')..[[",
    "$1",
]


@pytest.mark.parametrize("text", UNICODE + HOSTILE)
async def test_names_and_tags_round_trip_exactly(queue: conveyor.Queue, text: str) -> None:
    other = await queue.enqueue(
        "other-job", None, tags=["other"], channel="other", tenant="other", group="other"
    )
    job_id = await queue.enqueue(
        text,
        {"text": text},
        channel=text,
        tags=[text, "plain"],
        group=text,
        tenant=text,
        idempotency_key=text,
    )
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.name == text
    assert job.payload == {"text": text}
    assert job.channel == text
    assert job.tags == (text, "plain")
    assert job.group == text
    assert job.tenant == text
    # The value is matched as data, exactly, and only matches itself.
    assert [j.id for j in await queue.list_jobs(name=text)] == [job_id]
    assert [j.id for j in await queue.list_jobs(channel=text)] == [job_id]
    assert [j.id for j in await queue.list_jobs(tenant=text)] == [job_id]
    assert [j.id for j in await queue.list_jobs(tags=[text])] == [job_id]
    assert [j.id for j in await queue.list_jobs(tags=[text, "plain"], tag_mode="exact")] == [job_id]
    assert [j.id for j in await queue.list_jobs(tags=[text], tag_mode="none")] == [other]
    assert (await queue.counts(channel=text))["queued"] == 1
    assert await queue.enqueue("again", None, idempotency_key=text, tenant=text) == job_id
    assert await total(queue) == 2
    (event,) = await queue.get_job_events(job_id)
    assert event.job_name == text and event.tenant == text


@pytest.mark.parametrize("text", ["émoji-🚀-名前", "'; DROP TABLE x; --", "KEYS[1]", '"]]', "*"])
async def test_hostile_names_run_and_complete(queue: conveyor.Queue, text: str) -> None:
    seen: list[tuple[str, str, tuple[str, ...]]] = []

    @queue.job(text, channel=text)
    async def handler(payload: object, ctx: conveyor.Context) -> str:
        seen.append((ctx.name, ctx.channel, ctx.tags))
        ctx.log.info(text)
        return text

    job_id = await handler.enqueue(text, tags=[text], group=text)
    assert await queue.worker(channels=[text], include=[text]).run_once() == 1
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == text
    assert seen == [(text, text, (text,))]
    assert [r.message for r in await queue.get_job_logs(job_id)] == [text]


async def test_hostile_names_do_not_disturb_the_store(queue: conveyor.Queue) -> None:
    """After every hostile value, the store still works for ordinary jobs."""
    for text in HOSTILE:
        await queue.enqueue(text, text, tags=[text], channel=text, group=text, tenant=text)
    ran: list[int] = []

    @queue.job("ordinary")
    async def ordinary(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.job_id)

    job_id = await ordinary.enqueue(None)
    assert await queue.worker(channels=["default"]).run_once() == 1
    assert ran == [job_id]
    assert await total(queue) == len(HOSTILE) + 1
    assert len(await queue.list_jobs(limit=1000)) == len(HOSTILE) + 1


def test_error_tree() -> None:
    for cls in (
        conveyor.PayloadError,
        conveyor.ValidationError,
        conveyor.BackendError,
        conveyor.InvalidStateError,
        conveyor.QueueDormant,
        conveyor.WorkerDisabled,
        conveyor.UnsupportedError,
    ):
        assert issubclass(cls, conveyor.ConveyorError)
    assert issubclass(conveyor.PayloadError, conveyor.ValidationError)
    assert not issubclass(conveyor.Retry, conveyor.ConveyorError)
    assert not issubclass(conveyor.Fatal, conveyor.ConveyorError)


async def test_invalid_cron_and_timezone_refused_before_writing(queue: conveyor.Queue) -> None:
    for kwargs in (
        {"expression": "not a cron"},
        {"expression": "61 * * * *"},
        {"expression": "* * * * * * *"},
        {"expression": "0 2 * * *", "timezone": "Mars/Olympus"},
        {"expression": "0 2 * * *", "timezone": "localtime"},
        {"expression": None},
    ):
        with pytest.raises(conveyor.ValidationError):
            await queue.add_cron("sched", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError):
        await queue.add_cron("bad\nname", "* * * * *")
    with pytest.raises(conveyor.ValidationError):
        await queue.add_cron("sched", "* * * * *", payload={"x": {1}})
    with pytest.raises(conveyor.ValidationError):
        await queue.add_cron("sched", "* * * * *", priority=10**6)
    assert await queue.list_cron() == []
    with pytest.raises(conveyor.ValidationError):
        queue.job("cronjob", cron="every day")(lambda p, c: None)
    assert "cronjob" not in queue.definitions
