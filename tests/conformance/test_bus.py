"""A queue attached to an EventBus, on every backend: job:enqueue, rules, job.* events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.backends.base import ClaimParams
from conveyor.bus import EventBus, Rule
from conveyor.testing import ManualClock
from tests.conftest import wait_for


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        self.calls.append((type_, data))

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [d for t, d in self.calls if t == type_]


async def jobs_named(queue: conveyor.Queue, name: str) -> list[conveyor.Job]:
    return await queue.list_jobs(name=name)


async def one_job(queue: conveyor.Queue, name: str) -> conveyor.Job:
    (job,) = await wait_for(lambda: jobs_named(queue, name))
    return job


async def test_job_enqueue_event_enqueues_the_job(queue: conveyor.Queue) -> None:
    bus = EventBus()
    queue.attach(bus)
    bus.emit(
        "job:enqueue",
        {
            "name": "send-welcome",
            "payload": {"email": "a@b.c"},
            "options": {"tenant": "acme", "priority": 3, "tags": ["signup"], "attempts": 4},
        },
    )
    job = await one_job(queue, "send-welcome")
    assert job.payload == {"email": "a@b.c"} and job.tenant == "acme"
    assert (job.priority, job.tags, job.max_attempts) == (3, ("signup",), 4)
    assert job.state is JobState.QUEUED


async def test_emit_from_sync_code_enqueues_before_it_returns(queue: conveyor.Queue) -> None:
    bus = EventBus()
    queue.attach(bus, rules=[Rule("order.created", lambda e: {"name": "ship", "payload": e})])
    # A thread has no running loop: the bus enqueues with enqueue_sync, before emit returns.
    await asyncio.to_thread(bus.emit, "job:enqueue", {"name": "sync-job"})
    await asyncio.to_thread(bus.emit, "order.created", {"record_id": 1, "user_id": "u1"})
    assert [j.name for j in await jobs_named(queue, "sync-job")] == ["sync-job"]
    (ship,) = await jobs_named(queue, "ship")
    assert ship.tenant == "u1"
    assert ship.payload == {"record_id": 1, "user_id": "u1", "type": "order.created"}


async def test_rules_turn_record_events_into_jobs_with_tenant_precedence(
    queue: conveyor.Queue,
) -> None:
    bus = EventBus()
    seen: list[dict[str, Any]] = []

    def by_option(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        return {
            "name": "by-option",
            "payload": {"id": event["record_id"]},
            "options": {"tenant": "from-options"},
            "tenant": "from-result",
        }

    def by_result(event: dict[str, Any]) -> dict[str, Any]:
        return {"name": "by-result", "payload": None, "tenant": "from-result"}

    async def by_user(event: dict[str, Any]) -> dict[str, Any] | None:  # async build
        if event["record"].get("skip"):
            return None
        return {"name": "by-user", "payload": event["record"], "options": {"delay": 60}}

    queue.attach(
        bus,
        rules=[
            Rule(events="order.created", build=by_option),
            Rule(events=["order.*", "never.*"], build=by_result),
            Rule(events="order.*", build=by_user),
        ],
    )
    bus.emit("order.created", {"record_id": 7, "record": {"total": 3}, "user_id": 42})
    bus.emit("order.updated", {"record_id": 7, "record": {"skip": True}, "user_id": 42})

    assert (await one_job(queue, "by-option")).tenant == "from-options"
    by_user_job = await one_job(queue, "by-user")
    assert by_user_job.tenant == "42"  # the event's user_id (an int becomes its string)
    assert by_user_job.payload == {"total": 3} and by_user_job.state is JobState.SCHEDULED
    # order.created and order.updated both match by_result's patterns: two jobs, not more.
    results = await wait_for(lambda: _when_len(jobs_named(queue, "by-result"), 2))
    assert {j.tenant for j in results} == {"from-result"}
    assert seen == [
        {"record_id": 7, "record": {"total": 3}, "user_id": 42, "type": "order.created"}
    ]
    assert await jobs_named(queue, "by-option") and len(await jobs_named(queue, "by-user")) == 1


async def _when_len(coro: Any, n: int) -> Any:
    items = await coro
    return items if len(items) == n else None


async def test_a_rule_without_tenant_or_user_makes_an_untenanted_job(
    queue: conveyor.Queue,
) -> None:
    bus = EventBus()
    queue.attach(bus, rules=[Rule("ping", lambda e: {"name": "pong"})])
    bus.emit("ping", {})
    job = await one_job(queue, "pong")
    assert job.tenant is None and job.payload is None


async def test_job_events_are_republished_on_the_bus(queue: conveyor.Queue) -> None:
    bus = EventBus()
    seen = Recorder()
    bus.on("job.*", seen)
    queue.attach(bus)

    @queue.job("ok")
    async def ok(payload: Any, ctx: conveyor.Context) -> dict[str, int]:
        return {"v": payload["v"] * 2}

    @queue.job("boom")
    async def boom(payload: Any, ctx: conveyor.Context) -> None:
        raise RuntimeError("kaput")

    ok_id = await queue.enqueue("ok", {"v": 21}, tenant="acme")
    boom_id = await queue.enqueue("boom", tenant="globex")
    assert await queue.worker().run_once() == 2
    await wait_for(lambda: seen.of("job.completed") and seen.of("job.failed"))
    assert seen.of("job.completed") == [
        {"job_id": ok_id, "name": "ok", "tenant": "acme", "attempt": 1, "result": {"v": 42}}
    ]
    (failed,) = seen.of("job.failed")
    assert {k: failed[k] for k in ("job_id", "name", "tenant", "attempt")} == {
        "job_id": boom_id,
        "name": "boom",
        "tenant": "globex",
        "attempt": 1,
    }
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "kaput"
    assert set(failed) == {"job_id", "name", "tenant", "attempt", "error"}


async def test_a_stalled_job_is_republished(cq: conveyor.Queue, clock: ManualClock) -> None:
    queue = cq
    bus = EventBus()
    seen = Recorder()
    bus.on("job.*", seen)
    queue.attach(bus)
    job_id = await queue.enqueue("slow", tenant="acme", attempts=2)
    # A worker that claims the job and dies (nothing written after the claim).
    backend = await queue.engine.backend()
    now = clock.now()
    await backend.claim(
        ClaimParams(worker_id="dead", token="dead", limit=1, now=now, lease_expires_at=now + 2)
    )
    clock.advance(5)
    await queue.run_maintenance()
    (stalled,) = await wait_for(lambda: seen.of("job.stalled"))
    assert {k: stalled[k] for k in ("job_id", "name", "tenant", "attempt")} == {
        "job_id": job_id,
        "name": "slow",
        "tenant": "acme",
        "attempt": 1,
    }
    assert "error" in stalled and seen.of("job.failed") == []


async def test_a_catch_all_rule_does_not_loop(queue: conveyor.Queue) -> None:
    bus = EventBus()
    built: list[str] = []

    def audit(event: dict[str, Any]) -> dict[str, Any]:
        built.append(event["type"])
        return {"name": "audit", "payload": {"event": event["type"]}}

    queue.attach(bus, rules=[Rule(events="*", build=audit)])
    completed = Recorder()
    bus.on("job.completed", completed)

    @queue.job("audit")
    async def run_audit(payload: Any, ctx: conveyor.Context) -> str:
        return "ok"

    bus.emit("order.created", {"record_id": 1})
    await one_job(queue, "audit")
    assert await queue.worker().run_once() == 1
    await wait_for(lambda: completed.calls)
    bus.emit("job:enqueue", {"name": "audit", "payload": {"event": "direct"}})
    await wait_for(lambda: _when_len(queue.list_jobs(), 2))
    assert await queue.worker().run_once() == 1
    await wait_for(lambda: len(completed.calls) == 2)
    assert built == ["order.created"]  # never job.completed nor job:enqueue
    assert len(await queue.list_jobs()) == 2


async def test_enqueue_errors_are_logged_not_raised(
    queue: conveyor.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()

    def broken(event: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("no such field")

    queue.attach(
        bus,
        rules=[
            Rule("bad.build", broken),
            Rule("bad.result", lambda e: {"payload": 1}),  # no name
            Rule("bad.payload", lambda e: {"name": "x", "payload": {1, 2}}),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        bus.emit("job:enqueue", {"name": "x", "options": {"priority": 10**9}})
        bus.emit("job:enqueue", {"name": "x", "options": {"no_such_option": 1}})
        bus.emit("job:enqueue", {"name": ""})
        bus.emit("bad.build", {})
        bus.emit("bad.result", {})
        bus.emit("bad.payload", {})
        await wait_for(lambda: len([r for r in caplog.records if r.name == "conveyor"]) >= 6)
    bus.emit("job:enqueue", {"name": "fine"})
    await one_job(queue, "fine")
    assert [j.name for j in await queue.list_jobs()] == ["fine"]


async def test_a_dormant_queue_enqueues_nothing_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    queue = conveyor.Queue.from_env()
    bus = EventBus()
    calls: list[str] = []
    queue.attach(bus, rules=[Rule("order.*", lambda e: calls.append(e["type"]))])
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="conveyor"):
        bus.emit("job:enqueue", {"name": "x"})
        bus.emit("job:enqueue", {"name": "y"})
        bus.emit("order.created", {"user_id": 1})
    warnings = [r for r in caplog.records if r.name == "conveyor" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "dormant" in warnings[0].getMessage()
    assert calls == []  # rules are not even built


async def test_detach_stops_both_directions(queue: conveyor.Queue) -> None:
    bus = EventBus()
    seen = Recorder()
    bus.on("job.*", seen)
    attachment = queue.attach(bus, rules=[Rule("order.*", lambda e: {"name": "r"})])

    @queue.job("done")
    async def done(payload: Any, ctx: conveyor.Context) -> None:
        return None

    attachment.detach()
    bus.emit("job:enqueue", {"name": "done"})
    bus.emit("order.created", {})
    await attachment.drain()
    assert await queue.list_jobs() == []
    await queue.enqueue("done")
    assert await queue.worker().run_once() == 1
    assert seen.calls == []
