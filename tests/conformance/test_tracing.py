"""OpenTelemetry tracing (the ``otel`` extra): an enqueue span, a run span in the same
trace (child of the enqueue, linked to it), the outcome and errors on the run span; and
nothing stored or called when tracing is off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import conveyor
from conveyor import tracing
from conveyor.backends.base import ClaimParams

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: patch the tracer lookup instead.
    monkeypatch.setattr(tracing, "_tracer", lambda: _PROVIDER.get_tracer("conveyor"))
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def test_a_run_joins_the_trace_that_enqueued_it(
    cq: conveyor.Queue, spans: InMemorySpanExporter
) -> None:
    @cq.job("traced", attempts=2, backoff=conveyor.Backoff.fixed(0))
    async def traced(payload: Any, ctx: conveyor.Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return "ok"

    tracer = _PROVIDER.get_tracer("app")
    with tracer.start_as_current_span("POST /signup") as request:
        job_id = await traced.enqueue({"n": 1})
    job = await cq.get_job(job_id)
    assert job is not None
    assert await cq.worker().run_once() == 2  # the failure, then the retry
    by_name: dict[str, list[Any]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    [enqueue] = by_name["conveyor.enqueue traced"]
    runs = by_name["conveyor.run traced"]
    trace_id = request.get_span_context().trace_id
    assert enqueue.context.trace_id == trace_id and enqueue.kind == trace.SpanKind.PRODUCER
    assert (
        enqueue.parent is not None and enqueue.parent.span_id == request.get_span_context().span_id
    )
    assert len(runs) == 2
    for run in runs:
        assert run.kind == trace.SpanKind.CONSUMER
        assert run.context.trace_id == trace_id  # the same trace
        assert run.parent is not None and run.parent.span_id == enqueue.context.span_id
        assert [link.context.span_id for link in run.links] == [enqueue.context.span_id]
        assert run.attributes["messaging.message.id"] == str(job_id)
        assert run.attributes["messaging.destination.name"] == "default"
    first, second = sorted(runs, key=lambda s: s.attributes["conveyor.job.attempt"])
    assert first.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert first.attributes["conveyor.job.outcome"] == "error"
    assert second.status.status_code == trace.StatusCode.UNSET
    assert second.attributes["conveyor.job.outcome"] == "ok"


async def _stored_options(queue: conveyor.Queue) -> list[str | None]:
    backend = await queue.engine.ready()
    now = queue.clock.now()
    params = ClaimParams(worker_id="t", token="t", limit=10, now=now, lease_expires_at=now + 30)
    return [job.options for job in await backend.claim(params)]


async def test_the_trace_context_is_stored_only_when_spans_are_recorded(
    cq: conveyor.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cq.enqueue("plain", {})  # no tracer provider configured: nothing to store
    monkeypatch.setattr(tracing, "_tracer", lambda: _PROVIDER.get_tracer("conveyor"))
    await cq.enqueue("inside", {}, timeout=5)
    plain, inside = await _stored_options(cq)
    assert plain is None
    assert inside is not None and '"traceparent"' in inside and '"timeout": 5' in inside


async def test_tracing_off_costs_nothing(
    cq: conveyor.Queue, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "ENABLED", False)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tracing was called while off")

    monkeypatch.setattr(tracing, "enqueue_span", boom)
    monkeypatch.setattr(tracing, "run_span", boom)

    @cq.job("untraced")
    async def untraced(payload: Any, ctx: conveyor.Context) -> str:
        return "ok"

    with _PROVIDER.get_tracer("app").start_as_current_span("request"):
        await untraced.enqueue({})
    assert await cq.worker().run_once() == 1
    assert [s.name for s in spans.get_finished_spans()] == ["request"]
