"""EventBus: pattern matching, subscribe/unsubscribe, error isolation, async callbacks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from conveyor.bus import EventBus, Rule, matches
from conveyor.errors import ValidationError


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        self.calls.append((type_, data))

    @property
    def types(self) -> list[str]:
        return [t for t, _ in self.calls]


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("order.created", "order.created", True),
        ("order.created", "order.updated", False),
        ("order.created", "Order.created", False),  # case-sensitive
        ("user.*", "user.created", True),
        ("user.*", "user.profile.updated", True),  # * crosses dots
        ("user.*", "user", False),
        ("user.*", "users.created", False),
        ("user.*", "superuser.created", False),
        ("*", "order.created", True),
        ("*", "job.completed", True),
        ("*", "job:enqueue", True),
        ("*.created", "order.created", True),
        ("*.created", "order.updated", False),
        ("order.?", "order.a", True),
        ("order.[ab]", "order.c", False),
    ],
)
def test_pattern_matching(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_callbacks_get_type_and_data_in_registration_order() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on("user.*", lambda t, d: seen.append(f"wild:{t}:{d['id']}"))
    bus.on("user.created", lambda t, d: seen.append(f"exact:{t}:{d['id']}"))
    bus.on("order.*", lambda t, d: seen.append("never"))
    bus.emit("user.created", {"id": 7})
    assert seen == ["wild:user.created:7", "exact:user.created:7"]


def test_each_callback_gets_its_own_copy_of_the_data() -> None:
    bus = EventBus()
    seen = Recorder()
    bus.on("x", lambda t, d: d.update(mutated=True))
    bus.on("x", seen)
    data = {"a": 1}
    bus.emit("x", data)
    bus.emit("x")
    assert seen.calls == [("x", {"a": 1}), ("x", {})]
    assert data == {"a": 1}


def test_off_removes_one_registration_for_that_pattern() -> None:
    bus = EventBus()
    seen = Recorder()
    bus.on("a.*", seen)
    bus.on("a.*", seen)
    bus.on("a.b", seen)
    bus.off("a.*", seen)
    bus.emit("a.b")
    assert seen.types == ["a.b", "a.b"]  # one "a.*" and the "a.b" registration remain
    bus.off("a.*", seen)
    bus.off("a.b", seen)
    bus.off("a.b", seen)  # not registered any more: a no-op
    bus.off("nothing", Recorder())
    bus.emit("a.b")
    assert seen.types == ["a.b", "a.b"]


def test_a_callback_may_subscribe_or_unsubscribe_during_emit() -> None:
    bus = EventBus()
    seen = Recorder()

    def once(type_: str, data: dict[str, Any]) -> None:
        bus.off("x", once)
        bus.on("x", seen)

    bus.on("x", once)
    bus.emit("x")
    assert seen.types == []  # subscribers are fixed when emit starts
    bus.emit("x")
    assert seen.types == ["x"]


def test_a_raising_callback_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen = Recorder()

    def broken(type_: str, data: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    bus.on("*", broken)
    bus.on("*", seen)
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        bus.emit("order.created", {"id": 1})
    assert seen.types == ["order.created"]
    (record,) = [r for r in caplog.records if r.name == "conveyor"]
    assert "order.created" in record.getMessage()
    assert record.exc_info is not None and "listener bug" in str(record.exc_info[1])


async def test_async_callbacks_are_scheduled_and_emit_returns_at_once() -> None:
    bus = EventBus()
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[str] = []

    async def slow(type_: str, data: dict[str, Any]) -> None:
        started.set()
        await release.wait()
        done.append(type_)

    bus.on("x.*", slow)
    bus.emit("x.y")
    assert not started.is_set() and done == []  # scheduled, not run inline
    await asyncio.wait_for(started.wait(), 5)
    release.set()
    await asyncio.wait_for(bus.drain(), 5)
    assert done == ["x.y"]


async def test_a_raising_async_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()

    async def broken(type_: str, data: dict[str, Any]) -> None:
        raise ValueError("async listener bug")

    bus.on("x", broken)
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        bus.emit("x")
        await asyncio.wait_for(bus.drain(), 5)
    assert any(
        r.exc_info is not None and "async listener bug" in str(r.exc_info[1])
        for r in caplog.records
    )


def test_without_a_running_loop_async_callbacks_run_before_emit_returns() -> None:
    bus = EventBus()
    done: list[str] = []

    async def cb(type_: str, data: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        done.append(type_)

    bus.on("x", cb)
    bus.emit("x")
    assert done == ["x"]


def test_bad_patterns_and_callbacks_are_refused() -> None:
    bus = EventBus()
    with pytest.raises(ValidationError):
        bus.on("", Recorder())
    with pytest.raises(ValidationError):
        bus.on(None, Recorder())  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        bus.on("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        bus.emit("")


def test_rules_validate_and_never_match_job_events() -> None:
    def build(event: dict[str, Any]) -> None:
        return None

    with pytest.raises(ValidationError):
        Rule(events=[], build=build)
    with pytest.raises(ValidationError):
        Rule(events=["ok", ""], build=build)
    with pytest.raises(ValidationError):
        Rule(events="x", build="nope")  # type: ignore[arg-type]
    rule = Rule(events="*", build=build)
    assert rule.wants("order.created") and rule.wants("jobs.created")
    assert not rule.wants("job.completed") and not rule.wants("job:enqueue")
    listed = Rule(events=["order.*", "user.created"], build=build)
    assert listed.patterns == ("order.*", "user.created")
    assert listed.wants("user.created") and not listed.wants("user.deleted")
