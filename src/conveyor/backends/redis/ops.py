"""The operations surface on Redis: the worker registry, the pause state, throughput,
deleting jobs and the stored channel limits.

:class:`OpsVerbs` holds these verbs (mixed into
:class:`~conveyor.backends.redis.backend.RedisBackend`); the contract is in
:mod:`conveyor.backends.records` and :class:`~conveyor.backends.base.Backend`. Storage
(see :mod:`~conveyor.backends.redis.keys`):

* ``P workers`` (HASH) maps a worker id to its registration, JSON with the fields of
  :class:`~conveyor.backends.base.WorkerRecord` (``channels`` null for every channel);
  ``P workers_exp`` (ZSET) holds the same ids by ``expires_at``. A registration (also a
  heartbeat) replaces both in one script; listing drops the expired ones in the script
  that reads the rest, so a dead worker is gone once its lease has passed.
* the pause state is what ``set_paused.lua`` stores: ``P paused_all`` and ``P paused``.
* throughput counts the ``P done:<state>`` sets (finished jobs by ``finished_at``) with
  ``ZCOUNT`` in one script (``throughput.lua``).
* ``delete_jobs.lua`` deletes each job that is not running exactly as ``prune.lua``
  does (``delete_job`` in ``_lib.lua``).
* channel limits: ``P climits`` (HASH) maps a channel to JSON ``{"concurrency",
  "rate_n", "rate_per", "fair_by"}`` (the core reads them and passes them to claims).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio.client import Pipeline

from conveyor.backends.base import (
    ChannelLimitRecord,
    PausedState,
    RemovedJob,
    ThroughputBucket,
    ThroughputParams,
    WorkerRecord,
)
from conveyor.backends.redis import codec
from conveyor.backends.redis.connections import Connections
from conveyor.backends.redis.keys import Keys

__all__ = ["OpsVerbs", "worker_from_json", "worker_json"]


class _Host(Protocol):
    """What the verbs use of the backend they are mixed into."""

    _keys: Keys

    def _require(self) -> Connections: ...
    async def _script(self, name: str, *args: str) -> Any: ...


class OpsVerbs:
    """The operations-surface verbs of the Redis backend (see the module docstring)."""

    async def register_worker(self: _Host, record: WorkerRecord) -> None:
        """Create or replace worker ``record.id``'s registration (also its heartbeat)."""
        await self._script(
            "worker_register", record.id, codec.ts(record.expires_at), worker_json(record)
        )

    async def remove_worker(self: _Host, worker_id: str) -> None:
        """Forget a worker; an unknown id is ignored."""
        await self._script("worker_remove", worker_id)

    async def list_workers(self: _Host, now: float) -> list[WorkerRecord]:
        """Workers whose ``expires_at > now``, by ``started_at`` then id (the expired
        ones are deleted by the same script)."""
        texts = await self._script("worker_list", codec.ts(now))
        workers = [w for w in map(worker_from_json, texts) if w is not None]
        workers.sort(key=lambda w: (w.started_at, w.id))
        return workers

    async def paused_state(self: _Host) -> PausedState:
        """What ``set_paused`` stored: the every-channel pause and the paused channels
        (read in one transaction)."""
        keys = self._keys

        def build(pipe: Pipeline) -> None:
            pipe.exists(keys.paused_all)
            pipe.smembers(keys.paused)

        everything, channels = await self._require().pipeline("paused_state", build)
        return PausedState(bool(int(everything)), frozenset(str(c) for c in channels))

    async def throughput(self: _Host, params: ThroughputParams) -> list[ThroughputBucket]:
        """Jobs finished per bucket and final state, counted by ``ZCOUNT`` over the
        ``P done:<state>`` sets in one script; only buckets with a job are returned."""
        width, n = float(params.bucket), int(params.buckets)
        if n <= 0 or not (width > 0 and math.isfinite(width)):
            return []
        flat = await self._script("throughput", codec.ts(params.since), codec.ts(width), str(n))
        return [
            ThroughputBucket(int(flat[i]), int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]

    async def delete_jobs(self: _Host, job_ids: Sequence[int], now: float) -> list[RemovedJob]:
        """Delete these jobs unless running (those, and unknown ids, are skipped), with
        their events, logs, steps and tokens, as ``prune`` deletes, in one script. An
        unfinished job's deletion cancels (at ``now``) the jobs waiting on it, and counts
        as cancelled in its batch (see ``_lib_workflow.lua``)."""
        if not job_ids:
            return []
        ids = (str(int(i)) for i in job_ids)
        reply = await self._script("delete_jobs", codec.ts(now), *ids)
        return list(codec.removed_from_reply(reply).removed)

    async def set_channel_limits(self: _Host, record: ChannelLimitRecord) -> None:
        """Store (replace) a channel's limits; with every limit None, delete them."""
        client = self._require().client
        key = self._keys.climits
        if (
            record.concurrency is None
            and record.rate_n is None
            and record.rate_per is None
            and record.fair_by is None
        ):
            await self._require().guard("set_channel_limits", client.hdel(key, record.channel))
            return
        text = json.dumps(
            {
                "concurrency": record.concurrency,
                "rate_n": record.rate_n,
                "rate_per": record.rate_per,
                "fair_by": record.fair_by,
            },
            separators=(",", ":"),
        )
        await self._require().guard("set_channel_limits", client.hset(key, record.channel, text))

    async def list_channel_limits(self: _Host) -> list[ChannelLimitRecord]:
        """Every stored channel limit record, by channel (unreadable ones left out)."""
        client = self._require().client
        stored = await self._require().guard(
            "list_channel_limits", client.hgetall(self._keys.climits)
        )
        records = [r for r in (channel_limits_from(k, v) for k, v in stored.items()) if r]
        records.sort(key=lambda r: r.channel)
        return records


def channel_limits_from(channel: Any, text: Any) -> ChannelLimitRecord | None:
    """A stored channel limit record, or None when it is not one."""
    try:
        d = json.loads(text)
        concurrency, rate_n, per = d.get("concurrency"), d.get("rate_n"), d.get("rate_per")
        fair_by = d.get("fair_by")
        return ChannelLimitRecord(
            channel=channel.decode() if isinstance(channel, bytes) else str(channel),
            concurrency=None if concurrency is None else int(concurrency),
            rate_n=None if rate_n is None else int(rate_n),
            rate_per=None if per is None else float(per),
            fair_by=None if fair_by is None else str(fair_by),
        )
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def worker_json(record: WorkerRecord) -> str:
    """A registration as stored in ``P workers`` (times as exact floats)."""
    channels = None if record.channels is None else list(record.channels)
    return json.dumps(
        {
            "id": record.id,
            "host": record.host,
            "pid": record.pid,
            "channels": channels,
            "concurrency": record.concurrency,
            "running": list(record.running),
            "started_at": float(record.started_at),
            "last_seen": float(record.last_seen),
            "expires_at": float(record.expires_at),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def worker_from_json(text: str) -> WorkerRecord | None:
    """A stored registration, or None when it is not one (never written by this code:
    such a record is left out of listings rather than failing them)."""
    try:
        d = json.loads(text)
        channels = d["channels"]
        return WorkerRecord(
            id=str(d["id"]),
            host=str(d["host"]),
            pid=int(d["pid"]),
            channels=None if channels is None else tuple(str(c) for c in channels),
            concurrency=int(d["concurrency"]),
            running=tuple(int(i) for i in d["running"]),
            started_at=float(d["started_at"]),
            last_seen=float(d["last_seen"]),
            expires_at=float(d["expires_at"]),
        )
    except (ValueError, TypeError, KeyError):
        return None
