"""Fixtures of the conformance suite on top of ``tests/conftest.py``."""

from __future__ import annotations

import pytest

import conveyor
from conveyor.testing import ManualClock
from tests.conformance._util import T0


@pytest.fixture
def clock() -> ManualClock:
    """A clock that only moves when the test says so, starting at ``T0``."""
    return ManualClock(T0)


@pytest.fixture
async def cq(store, clock: ManualClock) -> conveyor.Queue:
    """Like ``queue`` (same fast timings, same store) but on the test's ManualClock."""
    q = store.queue(
        clock=clock, lease=2.0, heartbeat_interval=0.5, sweep_interval=0.2, poll_interval=0.2
    )
    await q.migrate()
    return q
