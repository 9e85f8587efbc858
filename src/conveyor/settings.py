"""Queue settings: arguments first, then ``CONVEYOR_*`` environment variables, then defaults."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from conveyor.durations import parse_duration
from conveyor.errors import ValidationError

__all__ = [
    "DEFAULT_URL",
    "FOREVER",
    "STORES",
    "Settings",
    "parse_duration",
    "store_of",
    "validate_identifier",
]

DEFAULT_URL = "sqlite:///conveyor.db"

#: URL scheme prefixes of each store kind.
STORES: dict[str, tuple[str, ...]] = {
    "sqlite": ("sqlite:",),
    "postgres": ("postgresql://", "postgres://"),
    "redis": ("redis://", "rediss://"),
}


def store_of(url: str) -> str:
    """The store kind of ``url`` (``"sqlite"``, ``"postgres"`` or ``"redis"``), or raise
    ValidationError naming the URL."""
    for kind, prefixes in STORES.items():
        if url.startswith(prefixes):
            return kind
    raise ValidationError(
        f"unsupported URL {url!r}: use sqlite:///path.db, postgresql://… or redis://…"
    )


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


def validate_identifier(value: str, what: str) -> str:
    """A schema or key prefix: letters, digits and underscores, not starting with a digit."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValidationError(
            f"{what} {value!r} is not allowed: use 1-48 letters, digits or underscores, "
            "not starting with a digit"
        )
    return value


FOREVER = ("forever",)  # the retention that keeps jobs until clean() removes them
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _retention(value: Any, what: str) -> float:
    """A retention: a duration (0: remove at the next pass), or ``"forever"`` (math.inf)."""
    if isinstance(value, str) and value.strip().lower() in FOREVER:
        return math.inf
    return parse_duration(value, what, positive=False)


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValidationError(f"{what} must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated queue settings.

    Attributes:
        url: store URL. Defaults to ``CONVEYOR_URL``, else ``sqlite:///conveyor.db``.
        schema: Postgres schema. Defaults to ``conveyor`` (``CONVEYOR_SCHEMA``).
        prefix: Redis key prefix. Defaults to ``conveyor`` (``CONVEYOR_PREFIX``).
        lease: seconds a claim lives without a heartbeat. Defaults to 30.
        heartbeat_interval: seconds between heartbeats. Defaults to ``lease / 3``.
        sweep_interval: seconds between maintenance passes. Defaults to 1.
        poll_interval: fallback poll when no notification arrives. Defaults to 1.
        max_payload_bytes: UTF-8 JSON size limit of a payload. Defaults to 1 MiB.
        keep_completed: retention of completed jobs, seconds (``math.inf``: forever).
            Defaults to 1 day.
        keep_failed: retention of failed and cancelled jobs, seconds (``math.inf``:
            forever). Defaults to 7 days.
        strict_names: refuse to enqueue a name no registered job has (when the queue has
            jobs of its own). Defaults to True (``CONVEYOR_STRICT_NAMES``).
        require_tenant: refuse an enqueue without a tenant. Defaults to False
            (``CONVEYOR_REQUIRE_TENANT``).
        store: the store kind parsed from ``url`` (``sqlite``, ``postgres``, ``redis``).
    """

    url: str = DEFAULT_URL
    schema: str = "conveyor"
    prefix: str = "conveyor"
    lease: float = 30.0
    heartbeat_interval: float = 10.0
    sweep_interval: float = 1.0
    poll_interval: float = 1.0
    max_payload_bytes: int = 1_048_576
    keep_completed: float = 86400.0
    keep_failed: float = 7 * 86400.0
    strict_names: bool = True
    require_tenant: bool = False
    store: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", store_of(self.url))

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Build from explicit arguments (None = not given), then ``CONVEYOR_*``, then defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if not f.init:
                continue
            v = given.get(f.name)
            if v is None:
                raw = env.get(f"CONVEYOR_{f.name.upper()}")
                v = raw if raw not in (None, "") else None
            if v is not None:
                values[f.name] = v
        values.setdefault("url", DEFAULT_URL)
        for key in ("lease", "sweep_interval", "poll_interval"):
            if key in values:
                values[key] = parse_duration(values[key], key)
        for key in ("keep_completed", "keep_failed"):  # 0: remove as soon as maintenance runs
            if key in values:
                values[key] = _retention(values[key], key)
        for key in ("strict_names", "require_tenant"):
            if key in values:
                values[key] = _flag(values[key], key)
        lease = values.get("lease", 30.0)
        if "heartbeat_interval" in values:
            values["heartbeat_interval"] = parse_duration(
                values["heartbeat_interval"], "heartbeat_interval"
            )
        else:
            values["heartbeat_interval"] = lease / 3
        if values["heartbeat_interval"] >= lease:
            raise ValidationError(
                f"heartbeat_interval ({values['heartbeat_interval']}) must be shorter than lease ({lease})"
            )
        if "max_payload_bytes" in values:
            try:
                values["max_payload_bytes"] = int(values["max_payload_bytes"])
            except (TypeError, ValueError):
                raise ValidationError("max_payload_bytes must be an integer") from None
            if values["max_payload_bytes"] <= 0:
                raise ValidationError("max_payload_bytes must be > 0")
        validate_identifier(values.get("schema", "conveyor"), "schema")
        validate_identifier(values.get("prefix", "conveyor"), "prefix")
        values["url"] = str(values["url"])
        return cls(**values)
