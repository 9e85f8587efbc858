"""Settings.resolve: explicit arguments, then CONVEYOR_* environment, then defaults."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import conveyor
from conveyor.settings import DEFAULT_URL, Settings, validate_identifier
from conveyor.validation import validate_name


def test_defaults() -> None:
    s = Settings.resolve(env={})
    assert s.url == DEFAULT_URL == "sqlite:///conveyor.db"
    assert s.schema == "conveyor" and s.prefix == "conveyor"
    assert s.lease == 30.0
    assert s.heartbeat_interval == pytest.approx(10.0)  # lease / 3
    assert s.sweep_interval == 1.0 and s.poll_interval == 1.0
    assert s.max_payload_bytes == 1_048_576
    assert s.keep_completed == 86400.0 and s.keep_failed == 7 * 86400.0


ENV = {
    "CONVEYOR_URL": "redis://localhost:6379/2",
    "CONVEYOR_SCHEMA": "envschema",
    "CONVEYOR_PREFIX": "envprefix",
    "CONVEYOR_LEASE": "12",
    "CONVEYOR_HEARTBEAT_INTERVAL": "2.5",
    "CONVEYOR_SWEEP_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL": "0.25",
    "CONVEYOR_MAX_PAYLOAD_BYTES": "2048",
    "CONVEYOR_KEEP_COMPLETED": "60",
    "CONVEYOR_KEEP_FAILED": "120",
}


def test_environment_over_defaults() -> None:
    s = Settings.resolve(env=ENV)
    assert s == Settings(
        url="redis://localhost:6379/2",
        schema="envschema",
        prefix="envprefix",
        lease=12.0,
        heartbeat_interval=2.5,
        sweep_interval=0.5,
        poll_interval=0.25,
        max_payload_bytes=2048,
        keep_completed=60.0,
        keep_failed=120.0,
    )


def test_arguments_over_environment() -> None:
    s = Settings.resolve(
        env=ENV,
        url="postgresql://db/app",
        schema="argschema",
        prefix="argprefix",
        lease=9,
        heartbeat_interval=1,
        sweep_interval=2,
        poll_interval=3,
        max_payload_bytes=10,
        keep_completed=timedelta(hours=1),
        keep_failed=timedelta(days=2),
    )
    assert s.url == "postgresql://db/app"
    assert (s.schema, s.prefix) == ("argschema", "argprefix")
    assert (s.lease, s.heartbeat_interval, s.sweep_interval, s.poll_interval) == (9, 1, 2, 3)
    assert s.max_payload_bytes == 10
    assert s.keep_completed == 3600 and s.keep_failed == 2 * 86400


def test_none_and_empty_env_mean_not_given() -> None:
    s = Settings.resolve(env={"CONVEYOR_LEASE": "", "CONVEYOR_URL": ""}, lease=None)
    assert s.lease == 30 and s.url == DEFAULT_URL


def test_heartbeat_defaults_to_a_third_of_the_lease_from_any_source() -> None:
    assert Settings.resolve(env={}, lease=9).heartbeat_interval == pytest.approx(3)
    assert Settings.resolve(env={"CONVEYOR_LEASE": "6"}).heartbeat_interval == pytest.approx(2)


def test_queue_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("CONVEYOR_LEASE", "4")
    q = conveyor.Queue()
    assert q.settings.url.endswith("env.db") and q.settings.lease == 4
    assert conveyor.Queue(lease=8).settings.lease == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lease": 0},
        {"lease": -1},
        {"lease": "abc"},
        {"lease": float("nan")},
        {"sweep_interval": 0},
        {"poll_interval": -0.1},
        {"keep_completed": -5},
        {"keep_failed": timedelta(seconds=-1)},
        {"lease": 3, "heartbeat_interval": 3},
        {"lease": 3, "heartbeat_interval": 5},
        {"heartbeat_interval": 0},
        {"max_payload_bytes": 0},
        {"max_payload_bytes": -10},
        {"max_payload_bytes": "lots"},
        {"schema": "bad schema"},
        {"schema": "1abc"},
        {"schema": "x" * 49},
        {"prefix": "a:b"},
        {"prefix": "{p}"},
        {"url": "mysql://localhost/db"},
        {"url": "http://example.com"},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(conveyor.ValidationError):
        Settings.resolve(env={}, **kwargs)


@pytest.mark.parametrize(("var", "value"), [("CONVEYOR_LEASE", "soon"), ("CONVEYOR_SCHEMA", "drop table"),
                                       ("CONVEYOR_MAX_PAYLOAD_BYTES", "1.5k"), ("CONVEYOR_URL", "ftp://x")])  # fmt: skip
def test_invalid_environment_is_refused(var: str, value: str) -> None:
    with pytest.raises(conveyor.ValidationError):
        Settings.resolve(env={var: value})


@pytest.mark.parametrize(
    "url",
    ["sqlite:///rel.db", "sqlite:////abs/path.db", "sqlite:///:memory:", "postgresql://u@h/db", "postgres://h/db",
     "redis://localhost:6379/0", "rediss://secure:6380/1"],
)  # fmt: skip
def test_supported_urls(url: str) -> None:
    assert Settings.resolve(env={}, url=url).url == url


def test_identifier_and_name_validation() -> None:
    assert validate_identifier("conveyor_2", "schema") == "conveyor_2"
    assert validate_identifier("_x", "prefix") == "_x"
    for bad in ("", "9x", "a-b", "a b", "é", None):
        with pytest.raises(conveyor.ValidationError):
            validate_identifier(bad, "schema")  # type: ignore[arg-type]
    assert validate_name("ünïcode name ✓", "job name") == "ünïcode name ✓"
    assert validate_name("x" * 200, "tag") == "x" * 200
    for bad in ("", "x" * 201, "a\nb", "\x00", "\x7f", 1, None):
        with pytest.raises(conveyor.ValidationError):
            validate_name(bad, "tag")
    assert len(validate_name("k" * 512, "idempotency_key", max_len=512)) == 512


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90", 90.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
     ("7d", 604800.0), ("2w", 1209600.0), (" 1.5h ", 5400.0), (timedelta(minutes=2), 120.0)],
)  # fmt: skip
def test_durations_take_units(given: object, seconds: float) -> None:
    assert Settings.resolve(env={}, keep_completed=given).keep_completed == seconds


def test_retention_can_be_forever_and_durations_come_from_the_environment() -> None:
    env = {"CONVEYOR_KEEP_FAILED": "forever", "CONVEYOR_KEEP_COMPLETED": "12h"}
    s = Settings.resolve(env=env)
    assert s.keep_failed == math.inf and s.keep_completed == 43200.0
    assert Settings.resolve(env={"CONVEYOR_LEASE": "2m"}).lease == 120.0
    assert conveyor.Queue("sqlite:///:memory:", keep_failed=None).settings.keep_failed == math.inf
    default = conveyor.Queue("sqlite:///:memory:").settings
    assert default.keep_failed == 7 * 86400 and default.keep_completed == 86400


@pytest.mark.parametrize("bad", ["7 days", "-1s", "1y", "forever", "", "ms", "inf"])
def test_bad_durations_are_refused_naming_the_setting(bad: str) -> None:
    with pytest.raises(conveyor.ValidationError, match="lease"):
        Settings.resolve(env={}, lease=bad)


def test_flags_parse_from_the_environment() -> None:
    s = Settings.resolve(env={"CONVEYOR_STRICT_NAMES": "no", "CONVEYOR_REQUIRE_TENANT": "1"})
    assert s.strict_names is False and s.require_tenant is True
    assert Settings.resolve(env={}).strict_names is True
    with pytest.raises(conveyor.ValidationError, match="require_tenant"):
        Settings.resolve(env={"CONVEYOR_REQUIRE_TENANT": "maybe"})
