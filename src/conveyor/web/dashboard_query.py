"""The dashboard's query side: the job filter its list and bulk actions share
(:class:`JobQuery`), query-parameter checks, and the JSON shapes of channels, limits and
workers. Pure: no I/O, no routes (those are ``dashboard_api.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.models import ChannelInfo, JobState, WorkerInfo
from conveyor.serialize import iso
from conveyor.web.guards import ApiError

__all__ = [
    "RETRYABLE", "UNFINISHED", "JobQuery", "channel_dict", "int_param", "invalid", "limits_dict", "tally", "without",
    "worker_dict",
]  # fmt: skip

_INT = re.compile(r"[0-9]{1,19}")
UNFINISHED = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.WAITING, JobState.RUNNING})
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED})
_FILTER_KEYS = ("state", "name", "prefix", "channel", "tenant", "tag", "tag_mode")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def int_param(raw: str | None, name: str, lo: int, hi: int) -> int | None:
    """An integer query parameter from ``lo`` to ``hi``, None when absent or empty."""
    if raw is None or raw == "":
        return None
    if not _INT.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise invalid(f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The filter of the job list and of the bulk actions: every given field must match.

    ``name`` is an exact name, ``prefix`` a name prefix, ``tags`` with ``tag_mode``
    (``any`` or ``all``) the tags.
    """

    state: JobState | None = None
    name: str | None = None
    prefix: str | None = None
    channel: str | None = None
    tenant: str | None = None
    tags: tuple[str, ...] | None = None
    tag_mode: str = "any"

    @classmethod
    def parse(cls, get: Callable[[str], list[str]]) -> JobQuery:
        """From ``get(key)``: the values given for ``key`` (empty ones are ignored)."""

        def one(key: str) -> str | None:
            values = [v for v in get(key) if v != ""]
            if len(values) > 1:
                raise invalid(f"{key} is given more than once")
            return values[0] if values else None

        state = one("state")
        if state is not None and state not in {s.value for s in JobState}:
            raise invalid(f"unknown state {state!r}; expected one of {[s.value for s in JobState]}")
        tags = tuple(dict.fromkeys(v for v in get("tag") if v != "")) or None
        tag_mode = one("tag_mode") or "any"
        if tag_mode not in ("any", "all"):
            raise invalid(f"tag_mode must be any or all, got {tag_mode!r}")
        return cls(
            state=JobState(state) if state else None,
            name=one("name"),
            prefix=one("prefix"),
            channel=one("channel"),
            tenant=one("tenant"),
            tags=tags,
            tag_mode=tag_mode,
        )

    @classmethod
    def from_params(cls, params: Any) -> JobQuery:
        """From a query string (Starlette's ``QueryParams``)."""
        return cls.parse(params.getlist)

    @classmethod
    def from_body(cls, body: Any) -> JobQuery:
        """From a JSON object with the query string's keys (``tag``: a string or a list)."""
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object with the filter")
        unknown = sorted(set(body) - set(_FILTER_KEYS))
        if unknown:
            raise invalid(f"unknown filter keys {unknown}; known: {list(_FILTER_KEYS)}")

        def get(key: str) -> list[str]:
            value = body.get(key)
            if value is None:
                return []
            values = value if isinstance(value, list) and key == "tag" else [value]
            if not all(isinstance(v, str) for v in values):
                raise invalid(f"{key} must be a string (tag: a string or a list of them)")
            return list(values)

        return cls.parse(get)

    def kwargs(self) -> dict[str, Any]:
        """The filter as keyword arguments of ``list_jobs``, ``retry_jobs``, ``delete_jobs``."""
        return {
            "state": self.state,
            "name": self.name,
            "name_prefix": self.prefix,
            "channel": self.channel,
            "tenant": self.tenant,
            "tags": list(self.tags) if self.tags else None,
            "tag_mode": self.tag_mode,
        }

    def as_dict(self) -> dict[str, Any]:
        """The filter as answered (only the given fields)."""
        out: dict[str, Any] = {
            "state": self.state.value if self.state else None,
            "name": self.name,
            "prefix": self.prefix,
            "channel": self.channel,
            "tenant": self.tenant,
            "tag": list(self.tags) if self.tags else None,
        }
        if self.tags and len(self.tags) > 1:
            out["tag_mode"] = self.tag_mode
        return {k: v for k, v in out.items() if v is not None}

    @property
    def counts_only(self) -> bool:
        """Whether ``queue.counts(channel)`` answers this filter exactly (state and channel
        at most)."""
        return not (self.name or self.prefix or self.tenant or self.tags)


def channel_dict(channel: ChannelInfo, now: float) -> dict[str, Any]:
    oldest = channel.oldest_queued_at
    age = None if oldest is None else round(max(0.0, now - oldest.timestamp()), 1)
    return {
        "name": channel.name,
        "counts": dict(channel.counts),
        "paused": channel.paused,
        "oldest_queued_at": iso(oldest),
        "oldest_queued_age": age,
        "limits": limits_dict(channel.limits),
    }


def limits_dict(limits: Any) -> dict[str, Any] | None:
    """A channel's stored limits (``queue.set_channel_limits``), or None."""
    if limits is None:
        return None
    rate = limits.rate
    return {
        "concurrency": limits.concurrency,
        "rate": None if rate is None else {"n": rate.n, "per": rate.seconds},
        "fair_by": limits.fair_by,
    }


def worker_dict(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "channels": list(worker.channels) if worker.channels is not None else None,
        "concurrency": worker.concurrency,
        "busy": len(worker.running),
        "running": list(worker.running),
        "started_at": iso(worker.started_at),
        "last_seen": iso(worker.last_seen),
    }


def without(data: dict[str, Any], *volatile: str) -> dict[str, Any]:
    """``data`` without the keys that change on every read (for comparing snapshots)."""
    out = {k: v for k, v in data.items() if k not in volatile}
    if "channels" in out:
        out["channels"] = [
            {k: v for k, v in c.items() if k != "oldest_queued_age"} for c in out["channels"]
        ]
    return out


def tally(per: Mapping[JobState, int], *, capped: bool) -> dict[str, Any]:
    """What each bulk action would change, from the matching jobs per state."""
    return {
        "matching": sum(per.values()),
        "retry": sum(n for s, n in per.items() if s in RETRYABLE),
        "cancel": sum(n for s, n in per.items() if s in UNFINISHED),
        "delete": sum(n for s, n in per.items() if s is not JobState.RUNNING),
        "by_state": {s.value: n for s, n in per.items()},
        "capped": capped,
    }
