"""OpenTelemetry tracing (the ``otel`` extra): a span per enqueue and per run, the run
linked to the trace that enqueued it through context stored with the job.

Off, at zero cost, when ``opentelemetry-api`` is not installed: :data:`ENABLED` is False
and the core never calls into this module. With it installed, spans go to whatever tracer
provider the application configured (none configured: OpenTelemetry's no-op provider).

- ``conveyor.enqueue <name>`` (kind PRODUCER) around each enqueue call; the W3C trace
  context of that span (``traceparent``, ``tracestate``) is stored in the job's options
  under ``"trace"``.
- ``conveyor.run <name>`` (kind CONSUMER) around each attempt, a child of the stored
  context when there is one (so a job's runs appear in the trace of the request that
  enqueued it), and also linked to it. Attributes follow the messaging conventions
  (``messaging.system = "conveyor"``, ``messaging.destination.name`` = the channel,
  ``messaging.message.id`` = the job id) plus ``conveyor.job.attempt``; an attempt that
  raised records the exception and sets the span's status to error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["ENABLED", "carrier", "enqueue_span", "record_outcome", "run_span"]

try:  # the otel extra
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the suite without the extra
    ENABLED = False
else:
    ENABLED = True

_SYSTEM = "conveyor"


def _tracer() -> Any:
    return _trace.get_tracer("conveyor")


@contextmanager
def enqueue_span(names: list[str]) -> Iterator[None]:
    """A PRODUCER span around one enqueue call (of one job, or of many)."""
    name = names[0] if len(names) == 1 else f"{len(names)} jobs"
    attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "send",
                  "messaging.batch.message_count": len(names)}  # fmt: skip
    with _tracer().start_as_current_span(
        f"conveyor.enqueue {name}", kind=_trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers, or None outside any recorded span."""
    if not _trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    _propagate.inject(headers)
    return headers or None


@contextmanager
def run_span(
    name: str, job_id: int, channel: str, attempt: int, stored: Mapping[str, str] | None
) -> Iterator[Any]:
    """A CONSUMER span around one attempt, child of (and linked to) the stored context."""
    parent = _propagate.extract(dict(stored)) if stored else None
    links = []
    if parent is not None:
        span_context = _trace.get_current_span(parent).get_span_context()
        if span_context.is_valid:
            links.append(_trace.Link(span_context))
    attributes = {
        "messaging.system": _SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": channel,
        "messaging.message.id": str(job_id),
        "conveyor.job.name": name,
        "conveyor.job.attempt": attempt,
    }
    token = _context.attach(parent) if parent is not None else None
    try:
        with _tracer().start_as_current_span(
            f"conveyor.run {name}", kind=_trace.SpanKind.CONSUMER, links=links,
            attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            yield span
    finally:
        if token is not None:
            _context.detach(token)


def record_outcome(span: Any, event: str, exc: BaseException | None) -> None:
    """Mark the run span with how the attempt ended (``ok``, ``error``, ``timeout``,
    ``suspended``, …; an error status when the handler raised)."""
    span.set_attribute("conveyor.job.outcome", event)
    if exc is not None and event == "error":
        span.record_exception(exc)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(exc)[:200]))
