"""Backoff policies and the Retry / Fatal control signals (pure)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from conveyor import Backoff, Fatal, Retry, ValidationError
from conveyor.retry import DEFAULT_BACKOFF


def test_fixed() -> None:
    b = Backoff.fixed(7)
    assert [b.delay(n) for n in (1, 2, 10)] == [7, 7, 7]
    assert Backoff.fixed(timedelta(minutes=2)).delay(1) == 120
    assert Backoff.fixed(0).delay(3) == 0


def test_exponential() -> None:
    b = Backoff.exponential(2)
    assert [b.delay(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert Backoff.exponential(3).delay(2) == 6  # delay * factor**(n-1), never delay^n
    assert Backoff.exponential(timedelta(seconds=2)).delay(3) == 8
    assert b.delay(0) == 2 and b.delay(-5) == 2  # never below the first attempt's wait


def test_exponential_is_delay_times_factor_to_the_attempt_before() -> None:
    """DESIGN.md: ``exponential(60)`` is 60 s, 120 s, 240 s (the Bull, Sidekiq and
    dataqueue meaning), never 60, 3,600, 216,000 s."""
    assert [Backoff.exponential(60).delay(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert [Backoff.exponential(0.5, factor=3).delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]
    assert [Backoff.exponential(5, factor=1).delay(n) for n in (1, 4)] == [5, 5]
    stored = Backoff.exponential(60, factor=3, max=500).to_dict()
    assert Backoff.from_dict(stored).delay(3) == 500
    # a backoff stored before factor existed decodes with the default factor 2
    assert Backoff.from_dict({"kind": "exponential", "base": 60.0}).delay(2) == 120


def test_exponential_max() -> None:
    b = Backoff.exponential(2, max=10)
    assert [b.delay(n) for n in (1, 2, 3, 4, 50)] == [2, 4, 8, 10, 10]
    assert Backoff.exponential(2, max=timedelta(seconds=5)).delay(10) == 5


def test_huge_attempt_numbers_do_not_overflow() -> None:
    d = Backoff.exponential(10).delay(100_000)
    assert d == d and d < float("inf")  # capped to a representable wait
    assert d <= 10 * 365 * 86400


@pytest.mark.parametrize("attempt", [1, 2, 5, 9])
def test_jitter_stays_within_half_to_full(attempt: int) -> None:
    b = Backoff.exponential(2, max=100, jitter=True)
    full = min(2.0**attempt, 100)
    rng = random.Random(1234)
    samples = [b.delay(attempt, rng) for _ in range(500)]
    assert all(full / 2 <= s <= full for s in samples)
    assert max(samples) - min(samples) > full / 10  # it does vary


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    b = Backoff.exponential(2, jitter=True)
    assert [b.delay(3, random.Random(7)) for _ in range(3)] == [b.delay(3, random.Random(7))] * 3


@pytest.mark.parametrize(
    "build",
    [
        lambda: Backoff.fixed(-1),
        lambda: Backoff.fixed(float("nan")),
        lambda: Backoff.fixed(timedelta(seconds=-1)),
        lambda: Backoff.exponential(-2),
        lambda: Backoff.exponential(2, max=-1),
        lambda: Backoff.exponential(2, factor=0.5),
        lambda: Backoff.exponential(2, factor=True),
        lambda: Backoff.fixed("soon"),
    ],
)
def test_bad_backoffs_are_refused(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValidationError, ValueError)):
        build()


def test_round_trip_through_dict() -> None:
    for b in (
        Backoff.fixed(3),
        Backoff.exponential(1.5, max=60, jitter=True),
        Backoff.exponential(2),
    ):
        assert Backoff.from_dict(b.to_dict()) == b
    with pytest.raises(ValidationError):
        Backoff.from_dict({"kind": "linear", "base": 1})


def test_default_backoff() -> None:
    assert DEFAULT_BACKOFF.kind == "exponential" and DEFAULT_BACKOFF.jitter
    assert all(0 < DEFAULT_BACKOFF.delay(n) <= 300 for n in range(1, 30))


def test_retry_signal() -> None:
    assert Retry().delay is None
    assert Retry(delay=5).delay == 5
    assert Retry(delay=timedelta(minutes=1)).delay == 60
    assert Retry(0).delay == 0
    assert str(Retry()) == "retry requested"
    assert str(Retry(3, message="rate limited")) == "rate limited"
    with pytest.raises(ValidationError):
        Retry(delay=-1)
    assert isinstance(Retry(), Exception)


def test_fatal_signal() -> None:
    f = Fatal("card declined")
    assert f.message == "card declined" and str(f) == "card declined"
    assert Fatal().message
    assert isinstance(f, Exception)
