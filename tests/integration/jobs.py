"""Builders shared by the backend-level integration tests (postgres, redis)."""

from __future__ import annotations

from typing import Any

from conveyor.backends.base import NewJob
from conveyor.models import JobState

NOW = 1_800_000_000.0  # a fixed "now": every decision takes the caller's clock


def new_job(name: str = "job", **kw: Any) -> NewJob:
    """A NewJob with defaults: queued at NOW on channel "default"."""
    fields: dict[str, Any] = {
        "name": name,
        "payload": '{"n": 1}',
        "state": JobState.QUEUED,
        "run_at": NOW,
        "priority": 0,
        "channel": "default",
        "max_attempts": 3,
        "options": None,
        "remove_on_complete": False,
        "idempotency_key": None,
        "tags": (),
        "group": None,
        "tenant": None,
    }
    fields.update(kw)
    return NewJob(**fields)
