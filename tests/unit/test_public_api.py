"""The public API is deliberate: ``conveyor.__all__`` changes only on purpose."""

from __future__ import annotations

import inspect

import pytest

import conveyor

EXPECTED = [
    "BackendError",
    "Backoff",
    "Batch",
    "ChannelInfo",
    "ChannelLimits",
    "Context",
    "ConveyorError",
    "CronSchedule",
    "CronSpec",
    "Event",
    "EventBus",
    "Fatal",
    "InvalidStateError",
    "Job",
    "JobDefinition",
    "JobSpec",
    "JobState",
    "Limit",
    "LogRecord",
    "PauseState",
    "PayloadError",
    "Queue",
    "QueueDormant",
    "Rate",
    "Retry",
    "Rule",
    "Snooze",
    "ThroughputPoint",
    "Token",
    "TokenResult",
    "UnsupportedError",
    "ValidationError",
    "Worker",
    "WorkerDisabled",
    "WorkerInfo",
    "next_tick",
]


def test_all_is_sorted_and_exactly_the_expected_names() -> None:
    assert list(conveyor.__all__) == sorted(conveyor.__all__)
    assert sorted(conveyor.__all__) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_public_name_exists_and_has_a_docstring(name: str) -> None:
    obj = getattr(conveyor, name)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"conveyor.{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        own = obj.__dict__.get("__doc__")
        assert own and own.strip(), f"conveyor.{name} inherits its docstring instead of having one"


def test_public_methods_and_properties_have_docstrings() -> None:
    missing = []
    for name in EXPECTED:
        cls = getattr(conveyor, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException):
            continue
        for attr, member in vars(cls).items():
            if attr.startswith("_"):
                continue
            if (
                callable(member) or isinstance(member, property | classmethod | staticmethod)
            ) and not (inspect.getdoc(member)):
                missing.append(f"{name}.{attr}")
    assert missing == []


def test_enqueue_options_are_explicit_typed_keywords() -> None:
    """DESIGN.md: enqueue options are keyword-only parameters (so editors and mypy check
    them), the same on every enqueue method and JobSpec, never ``**options``."""
    import dataclasses

    spec_fields = [f.name for f in dataclasses.fields(conveyor.JobSpec)][2:]  # name, payload
    for method in (
        conveyor.Queue.enqueue,
        conveyor.Queue.enqueue_sync,
        conveyor.JobDefinition.enqueue,
        conveyor.JobDefinition.enqueue_sync,
    ):
        params = inspect.signature(method).parameters.values()
        assert not [p for p in params if p.kind is p.VAR_KEYWORD], method.__qualname__
        keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        assert keywords == [*spec_fields, "connection"], method.__qualname__
        assert all(p.annotation is not p.empty for p in params if p.name != "self")


async def test_an_unknown_enqueue_option_names_itself() -> None:
    queue = conveyor.Queue("sqlite:///:memory:")
    with pytest.raises(TypeError, match="priorty"):
        await queue.enqueue("x", priorty=1)  # type: ignore[call-arg]
    await queue.close()
