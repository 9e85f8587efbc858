"""One duration parser for every duration option, argument and CONVEYOR_* twin."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import conveyor
from conveyor.durations import parse_duration
from conveyor.settings import Settings


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (5, 5.0), (2.5, 2.5), (timedelta(minutes=2), 120.0), ("500ms", 0.5), ("30s", 30.0),
        ("15m", 900.0), ("12h", 43200.0), ("7d", 604800.0), ("2w", 1209600.0), ("90", 90.0),
        (" 1.5h ", 5400.0), ("10S", 10.0),
    ],
)  # fmt: skip
def test_accepted_durations(given: Any, seconds: float) -> None:
    assert parse_duration(given, "delay") == seconds


@pytest.mark.parametrize(
    "given", ["7 days", "-1h", "1e400s", "1e3", "", "h", "1.h", "nan", "inf", -1, float("nan"),
              float("inf"), True, None, [1], 10**400, timedelta(seconds=-1)],
)  # fmt: skip
def test_refused_durations_name_the_option(given: Any) -> None:
    with pytest.raises(conveyor.ValidationError, match="lease"):
        parse_duration(given, "lease")


def test_zero_is_refused_only_where_a_positive_duration_is_needed() -> None:
    assert parse_duration("0s", "delay", positive=False) == 0.0
    with pytest.raises(conveyor.ValidationError, match="> 0"):
        parse_duration(0, "timeout")


def test_environment_twins_use_the_same_parser() -> None:
    settings = Settings.resolve(env={"CONVEYOR_LEASE": "2m", "CONVEYOR_KEEP_FAILED": "7d"})
    assert (settings.lease, settings.keep_failed) == (120.0, 604800.0)
    with pytest.raises(conveyor.ValidationError, match="7 days"):
        Settings.resolve(env={"CONVEYOR_LEASE": "7 days"})


async def test_every_duration_option_takes_the_same_forms() -> None:
    async with conveyor.Queue("sqlite:///:memory:", lease="1m", keep_completed="12h") as q:
        assert (q.settings.lease, q.settings.keep_completed) == (60.0, 43200.0)
        job_id = await q.enqueue("any", delay="15m", timeout="30s")
        job = await q.get_job(job_id)
        assert job is not None and job.timeout == 30.0
        assert (job.run_at - job.created_at).total_seconds() == pytest.approx(900, abs=1)
        with pytest.raises(conveyor.ValidationError, match="delay"):
            await q.enqueue("any", delay="-1h")
        with pytest.raises(conveyor.ValidationError, match="timeout"):
            await q.enqueue("any", timeout="1e400s")
    assert conveyor.Backoff.fixed("2m").delay(1) == 120.0
    assert conveyor.Retry("500ms").delay == 0.5
    assert conveyor.Snooze("1h").delay == 3600.0
    with pytest.raises(conveyor.ValidationError, match="Snooze"):
        conveyor.Snooze("soon")
