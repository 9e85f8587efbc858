"""Cron and interval schedule math: validation, DST rules, and properties."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.errors import ValidationError
from conveyor.scheduling import Schedule, compile_schedule, next_tick, validate_timezone

NY = "America/New_York"
AMS = "Europe/Amsterdam"
LHI = "Australia/Lord_Howe"
ZONES = ["UTC", NY, AMS, LHI, "Asia/Kolkata"]
FAST = settings(max_examples=120, deadline=None, database=None)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ticks_between(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in [start, end), found by chaining next_tick."""
    out: list[datetime] = []
    tick = next_tick(expression, start - timedelta(microseconds=1), tz)
    while tick < end:
        out.append(tick)
        tick = next_tick(expression, tick, tz)
    return out


def ticks_on(expression: str, tz: str, day: date) -> list[datetime]:
    """Every tick on one local calendar day (local midnight exists in the zones used)."""
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return ticks_between(expression, tz, start, end)


def local(tick: datetime, tz: str) -> tuple[int, int, int]:
    """(hour, minute, UTC offset in minutes) of a tick in a zone."""
    moment = tick.astimezone(ZoneInfo(tz))
    offset = moment.utcoffset()
    assert offset is not None
    return moment.hour, moment.minute, int(offset.total_seconds()) // 60


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "seconds and year fields are not supported"),
        ("0 0 * * * * 2030", "seconds and year fields are not supported"),
        ("60 * * * *", "out of range"),
        ("*/0 * * * *", "step"),
        ("a b c d e", "not acceptable"),
        ("0 24 * * *", "out of range"),
        ("@reboot", "unknown macro"),
        ("@daily extra", "unknown macro"),
        ("H * * * *", "hashed"),
        ("R * * * *", "random"),
        ("0 0 * * 1,r", "random"),
        ("0 3-3 * * *", "equal ends"),
        ("1-01/5 * * * *", "equal ends"),
        ("0 0 * jan-JAN *", "equal ends"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_invalid_cron_expressions_name_the_expression_and_why(expression: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as info:
        compile_schedule(expression)
    assert repr(expression.strip()) in str(info.value)
    with pytest.raises(ValidationError):
        next_tick(expression, utc(2026, 1, 1))


@pytest.mark.parametrize(
    "expression", ["@every", "@every 0", "@every 0.5", "@every -5", "@every nan", "@every 5m"]
)
def test_invalid_intervals_are_refused(expression: str) -> None:
    with pytest.raises(ValidationError, match="interval"):
        compile_schedule(expression)


@pytest.mark.parametrize(
    "every", [0, 0.999, -1, timedelta(0), timedelta(milliseconds=500), math.nan, True, "300"]
)
def test_invalid_every_is_refused(every: object) -> None:
    with pytest.raises(ValidationError):
        compile_schedule(every=every)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Nope/Zone", "", "../etc/passwd", "America", "zone.tab", "\0"])
def test_unknown_time_zones_are_refused_by_name(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_timezone(name)
    assert repr(name) in str(info.value)
    with pytest.raises(ValidationError, match="time zone"):
        compile_schedule("0 0 * * *", timezone=name)
    with pytest.raises(ValidationError, match="time zone"):
        next_tick("0 0 * * *", utc(2026, 1, 1), name)


def test_localtime_is_refused_because_it_differs_per_host() -> None:
    with pytest.raises(ValidationError, match="localtime"):
        validate_timezone("localtime")


def test_validate_timezone_returns_the_zone() -> None:
    assert validate_timezone(AMS) == ZoneInfo(AMS)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValidationError, match="aware"):
        next_tick("0 0 * * *", datetime(2026, 1, 1))


def test_exactly_one_of_expression_and_every() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        compile_schedule()
    with pytest.raises(ValidationError, match="exactly one"):
        compile_schedule("0 0 * * *", every=60)


def test_non_string_expression_is_refused() -> None:
    with pytest.raises(ValidationError, match="string"):
        compile_schedule(123)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="string"):
        Schedule(None)  # type: ignore[arg-type]


# --- compiling and round trips --------------------------------------------------------


def test_cron_expression_is_stored_stripped() -> None:
    schedule = compile_schedule("  0 2 * * *\n", timezone=AMS)
    assert (schedule.expression, schedule.timezone, schedule.interval) == ("0 2 * * *", AMS, None)
    assert compile_schedule(schedule.expression, timezone=AMS) == schedule


@pytest.mark.parametrize(
    ("every", "text", "seconds"),
    [
        (timedelta(minutes=5), "@every 300", 300.0),
        (300, "@every 300", 300.0),
        (300.0, "@every 300", 300.0),
        (1.5, "@every 1.5", 1.5),
        (timedelta(seconds=1), "@every 1", 1.0),
    ],
)
def test_intervals_store_and_parse_back(
    every: timedelta | float, text: str, seconds: float
) -> None:
    schedule = compile_schedule(every=every)
    assert (schedule.expression, schedule.interval) == (text, seconds)
    assert compile_schedule(text) == schedule
    assert compile_schedule(f"  {text.upper()}  ").expression == text
    assert Schedule(text) == schedule


def test_schedule_built_directly_is_validated_and_hashable() -> None:
    with pytest.raises(ValidationError):
        Schedule("not cron")
    assert hash(Schedule("0 0 * * *", NY)) == hash(compile_schedule("0 0 * * *", timezone=NY))
    assert "_cron" not in repr(Schedule("0 0 * * *"))


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros_match_their_expressions(macro: str, equivalent: str) -> None:
    after = utc(2026, 5, 17, 13, 14)
    for tz in (NY, AMS):
        assert next_tick(macro, after, tz) == next_tick(equivalent, after, tz)
    assert compile_schedule(macro).expression == macro


def test_rare_but_real_schedule_compiles() -> None:
    # A fifth Monday in February happens only when 29 February is a Monday.
    assert next_tick("0 0 * 2 1#5", utc(2016, 3, 1)) == utc(2044, 2, 29)


# --- UTC basics -----------------------------------------------------------------------


def test_next_tick_is_strictly_after_and_in_utc() -> None:
    assert next_tick("*/5 * * * *", utc(2026, 1, 1, 10, 2)) == utc(2026, 1, 1, 10, 5)
    tick = next_tick("*/5 * * * *", utc(2026, 1, 1, 10, 5))
    assert tick == utc(2026, 1, 1, 10, 10)
    assert tick.tzinfo is UTC
    # Microseconds past a tick still move on; an aware `after` in any zone is accepted.
    assert next_tick("*/5 * * * *", utc(2026, 1, 1, 10, 5) + timedelta(microseconds=1)) == tick
    kolkata = datetime(2026, 1, 1, 15, 32, tzinfo=ZoneInfo("Asia/Kolkata"))  # 10:02 UTC
    assert next_tick("*/5 * * * *", kolkata) == utc(2026, 1, 1, 10, 5)


def test_zone_without_dst_uses_its_fixed_offset() -> None:
    assert next_tick("0 12 * * *", utc(2026, 6, 1), "Asia/Kolkata") == utc(2026, 6, 1, 6, 30)


def test_next_after_works_in_epoch_seconds() -> None:
    schedule = compile_schedule("0 * * * *")
    hour = utc(2026, 1, 1, 10).timestamp()
    assert schedule.next_after(hour - 0.5) == hour
    assert schedule.next_after(hour) == hour + 3600
    assert schedule.next_after(hour + 0.25) == hour + 3600


def test_interval_ticks_are_epoch_multiples_whatever_the_zone() -> None:
    schedule = compile_schedule(every=300, timezone=LHI)
    assert schedule.next_after(0) == 300
    assert schedule.next_after(299.5) == 300
    assert schedule.next_after(300) == 600
    assert compile_schedule(every=1.5).next_after(2.9) == 3.0
    assert next_tick("@every 60", utc(2026, 1, 1, 10, 0, 30)) == utc(2026, 1, 1, 10, 1)


# --- DST ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [(NY, date(2026, 3, 8), date(2026, 11, 1)), (AMS, date(2026, 3, 29), date(2026, 10, 25))],
)
@pytest.mark.parametrize("hourly", ["0 * * * *", "0 */1 * * *", "0 0-23 * * *", "@hourly"])
def test_hourly_follows_elapsed_hours(tz: str, spring: date, fall: date, hourly: str) -> None:
    spring_ticks = ticks_on(hourly, tz, spring)
    fall_ticks = ticks_on(hourly, tz, fall)
    assert len(spring_ticks) == 23
    assert len(fall_ticks) == 25
    for ticks in (spring_ticks, fall_ticks):
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))


def test_skipped_wall_time_fires_once_when_the_gap_ends() -> None:
    (tick,) = ticks_on("30 2 * * *", NY, date(2026, 3, 8))
    assert tick == utc(2026, 3, 8, 7)  # 03:00 EDT
    (tick,) = ticks_on("30 2 * * *", AMS, date(2026, 3, 29))
    assert tick == utc(2026, 3, 29, 1)  # 03:00 CEST
    assert local(tick, AMS) == (3, 0, 120)


def test_skipped_ticks_collapse_into_one() -> None:
    ticks = ticks_on("*/15 * * * *", NY, date(2026, 3, 8))
    assert len(ticks) == 96 - 4  # 02:00..02:45 all become 03:00, which also fires itself
    assert ticks.count(utc(2026, 3, 8, 7)) == 1
    assert ticks == sorted(set(ticks))


def test_repeated_wall_time_with_fixed_hour_fires_once_at_first_occurrence() -> None:
    (tick,) = ticks_on("30 2 * * *", AMS, date(2026, 10, 25))
    assert local(tick, AMS) == (2, 30, 120)  # the CEST 02:30, not the CET one
    (tick,) = ticks_on("30 1 * * *", NY, date(2026, 11, 1))
    assert tick == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    minutes = ticks_on("* 1 * * *", NY, date(2026, 11, 1))
    assert len(minutes) == 60
    assert {local(t, NY)[2] for t in minutes} == {-240}  # all in the EDT pass
    assert len(ticks_on("30 1,2 * * *", NY, date(2026, 11, 1))) == 2


def test_after_in_first_pass_with_wildcard_hour_visits_both_passes() -> None:
    tick = utc(2026, 11, 1, 5, 30)  # 01:30 EDT, first pass
    seen = []
    for _ in range(7):
        tick = next_tick("*/15 * * * *", tick, NY)
        seen.append(local(tick, NY))
    assert seen == [
        (1, 45, -240),
        (1, 0, -300),
        (1, 15, -300),
        (1, 30, -300),
        (1, 45, -300),
        (2, 0, -300),
        (2, 15, -300),
    ]


@pytest.mark.parametrize(
    "after",
    [
        utc(2026, 11, 1, 5, 30),  # the first 01:30 (EDT)
        utc(2026, 11, 1, 6),  # 01:00 EST: the repeat has started
        utc(2026, 11, 1, 6, 30),  # the second 01:30 (EST)
    ],
)
def test_after_in_repeated_hour_with_fixed_hour_waits_for_next_day(after: datetime) -> None:
    assert next_tick("30 1 * * *", after, NY) == utc(2026, 11, 2, 6, 30)


def test_after_given_as_a_wall_time_inside_the_gap() -> None:
    zone = ZoneInfo(NY)
    # fold=0 reads 02:30 with the offset before the gap (07:30 UTC, 03:30 EDT)...
    assert next_tick("*/15 * * * *", datetime(2026, 3, 8, 2, 30, tzinfo=zone)) == utc(
        2026, 3, 8, 7, 45
    )
    # ... fold=1 with the offset after it (06:30 UTC, 01:30 EST).
    gap_fold1 = datetime(2026, 3, 8, 2, 30, fold=1, tzinfo=zone)
    assert next_tick("*/15 * * * *", gap_fold1, NY) == utc(2026, 3, 8, 6, 45)
    assert next_tick("30 2 * * *", utc(2026, 3, 8, 6, 59, 59), NY) == utc(2026, 3, 8, 7)
    assert next_tick("30 2 * * *", utc(2026, 3, 8, 7), NY) == utc(2026, 3, 9, 6, 30)


def test_lord_howe_half_hour_shifts() -> None:
    spring = ticks_on("0 * * * *", LHI, date(2026, 10, 4))  # 02:00 -> 02:30
    assert len(spring) == 24
    assert local(spring[2], LHI) == (2, 30, 660)
    fall = date(2026, 4, 5)  # 02:00 -> 01:30
    assert len(ticks_on("*/30 * * * *", LHI, fall)) == 49
    assert len(ticks_on("0 * * * *", LHI, fall)) == 24
    (tick,) = ticks_on("30 1 * * *", LHI, fall)
    assert local(tick, LHI) == (1, 30, 660)


@pytest.mark.parametrize("tz", [NY, AMS, LHI])
def test_daily_fires_once_a_day_for_a_year(tz: str) -> None:
    zone = ZoneInfo(tz)
    ticks = ticks_between(
        "0 12 * * *", tz, datetime(2026, 1, 1, tzinfo=zone), datetime(2027, 1, 1, tzinfo=zone)
    )
    assert len(ticks) == 365
    assert {local(t, tz)[:2] for t in ticks} == {(12, 0)}
    assert len({t.astimezone(zone).date() for t in ticks}) == 365


# --- properties -----------------------------------------------------------------------


@st.composite
def field(draw: st.DrawFn, low: int, high: int) -> tuple[str, set[int]]:
    """A cron field (text) and the values it matches."""
    kind = draw(st.sampled_from(["star", "step", "range_step", "list", "single"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "step":
        step = draw(st.integers(2, (high - low + 1) // 2))
        return f"*/{step}", set(range(low, high + 1, step))
    if kind == "range_step":
        a = draw(st.integers(low, high - 1))
        b = draw(st.integers(a + 1, high))
        step = draw(st.integers(1, 5))
        return f"{a}-{b}/{step}", set(range(a, b + 1, step))
    values = draw(
        st.sets(st.integers(low, high), min_size=1, max_size=1 if kind == "single" else 4)
    )
    return ",".join(map(str, sorted(values))), values


day_field = st.sampled_from(["*", "1", "15", "1,15", "L", "*/7"])
month_field = st.sampled_from(["*", "1-6", "3,10", "*/2"])
dow_field = st.sampled_from(["*", "1-5", "0,6", "3", "5#2"])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    minute, _ = draw(field(0, 59))
    hour, _ = draw(field(0, 23))
    dow = draw(dow_field)
    # croniter ANDs a day of month with an nth weekday ("1 * 5#2" never fires): keep apart.
    dom = "*" if "#" in dow else draw(day_field)
    return f"{minute} {hour} {dom} {draw(month_field)} {dow}"


afters = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2060, 12, 31),
    timezones=st.sampled_from([ZoneInfo(z) for z in ZONES]),
)


def is_gap_end(tick: datetime, zone: ZoneInfo) -> bool:
    before = (tick - timedelta(seconds=1)).astimezone(zone).utcoffset()
    at = tick.astimezone(zone).utcoffset()
    assert before is not None
    assert at is not None
    return at > before


@FAST
@given(expression=expressions(), after=afters, tz=st.sampled_from(ZONES))
def test_ticks_are_strictly_increasing_matches(expression: str, after: datetime, tz: str) -> None:
    zone = ZoneInfo(tz)
    every_hour = expression.split()[1] == "*"
    previous = after
    for _ in range(3):
        tick = next_tick(expression, previous, tz)
        assert tick > previous
        assert tick.tzinfo is UTC
        moment = tick.astimezone(zone)
        wall = moment.replace(tzinfo=None)
        assert croniter.match(expression, wall) or is_gap_end(tick, zone)
        assert not moment.fold or every_hour  # a repeat fires only for a wildcard hour
        previous = tick


TRANSITION_DAYS = [
    (NY, date(2026, 3, 8)),
    (NY, date(2026, 11, 1)),
    (AMS, date(2026, 3, 29)),
    (AMS, date(2026, 10, 25)),
    (LHI, date(2026, 4, 5)),
    (LHI, date(2026, 10, 4)),
    ("Asia/Kolkata", date(2026, 6, 1)),
    ("UTC", date(2026, 6, 1)),
]


def oracle(minutes: set[int], hours: set[int], tz: str, start: int, end: int) -> list[int]:
    """The rules restated minute by minute over UTC instants, without croniter."""
    zone = ZoneInfo(tz)
    every_hour = len(hours) == 24

    def matches(wall: datetime) -> bool:
        return wall.minute in minutes and wall.hour in hours

    def offset(ts: int) -> int:
        value = datetime.fromtimestamp(ts, zone).utcoffset()
        assert value is not None
        return int(value.total_seconds())

    out = []
    for ts in range(start, end, 60):
        moment = datetime.fromtimestamp(ts, zone)
        off, before = offset(ts), offset(ts - 60)
        if off > before:  # a gap ends here: the skipped wall times fire now
            skipped = range(ts + before, ts + off, 60)
            fires = matches(moment) or any(matches(datetime.fromtimestamp(w, UTC)) for w in skipped)
        else:
            fires = matches(moment) and (moment.fold == 0 or every_hour)
        if fires:
            out.append(ts)
    return out


minute_fields = st.one_of(
    st.sampled_from([("*/10", set(range(0, 60, 10))), ("*/15", set(range(0, 60, 15)))]),
    st.sets(st.integers(0, 59), min_size=1, max_size=3).map(
        lambda v: (",".join(map(str, sorted(v))), v)
    ),
)


@settings(max_examples=60, deadline=None, database=None)
@given(
    minute=minute_fields,
    hour=field(0, 23),
    where=st.sampled_from(TRANSITION_DAYS),
)
def test_transition_days_match_an_independent_oracle(
    minute: tuple[str, set[int]], hour: tuple[str, set[int]], where: tuple[str, date]
) -> None:
    tz, day = where
    schedule = compile_schedule(f"{minute[0]} {hour[0]} * * *", timezone=tz)
    start = int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp()) - 3600
    end = start + 28 * 3600
    expected = oracle(minute[1], hour[1], tz, start, end)
    got = []
    tick = schedule.next_after(start - 1)
    while tick < end:
        got.append(int(tick))
        tick = schedule.next_after(tick)
    assert got == expected


@FAST
@given(
    every=st.integers(1, 10**6),
    ts=st.one_of(st.integers(0, 4 * 10**9), st.floats(0, 4e9)),
)
def test_interval_ticks_are_the_next_multiple(every: int, ts: float) -> None:
    schedule = compile_schedule(every=every)
    tick = schedule.next_after(ts)
    assert ts < tick <= ts + every
    assert tick % every == 0
    assert schedule.next_after(tick) == tick + every


@FAST
@given(every=st.floats(1, 1e6), ts=st.floats(0, 4e9))
def test_fractional_interval_ticks_are_the_next_multiple(every: float, ts: float) -> None:
    tick = compile_schedule(every=every).next_after(ts)
    assert tick > ts
    assert tick - ts <= every * (1 + 1e-9)
    assert abs(tick / every - round(tick / every)) < 1e-6


cron_tokens = st.sampled_from(
    ["*", "*/5", "0", "59", "60", "1-5", "5-1", "L", "W", "15W", "1#2", "?", "jan", "MON", "-", "/"]
)


@FAST
@given(
    text=st.one_of(
        st.text(max_size=30),
        st.lists(cron_tokens, min_size=0, max_size=8).map(" ".join),
        st.builds("@{}".format, st.text(max_size=10)),
    )
)
def test_any_text_compiles_or_raises_validation_error(text: str) -> None:
    try:
        schedule = compile_schedule(text, timezone=NY)
    except ValidationError:
        return
    assert schedule.next_after(1.7e9) > 1.7e9


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(expression=expressions(), tz=st.sampled_from(ZONES))
def test_schedule_and_next_tick_agree(expression: str, tz: str) -> None:
    after = utc(2026, 10, 31, 23)
    schedule = compile_schedule(expression, timezone=tz)
    assert schedule.next_after(after.timestamp()) == next_tick(expression, after, tz).timestamp()
