"""Every Redis key conveyor uses, named in one place.

All keys of a queue share the hash tag ``{<prefix>}`` so they live in one Redis Cluster
slot (every script touches keys derived from that tag, which Cluster allows only when
they hash to the same slot). The layout, with ``P = "{<prefix>}:"``:

============================  ======  ====================================================
key                           type    holds
============================  ======  ====================================================
``P id``                      STRING  last job id (``INCR``); ``KEYS[1]`` of every script
``P job:<id>``                HASH    one job, fields named like the SQL columns (and
                                      ``has_tokens``: see below)
``P ev:<id>``                 LIST    the job's events (JSON objects; ``enqueued`` derived
                                      from the job's hash unless remove_on_complete)
``P log:<id>``                LIST    the job's log lines (JSON objects)
``P all``                     ZSET    every job id, score = id (newest-first listing)
``P st:<state>``              ZSET    job ids in that state, score = id (counts, listing)
``P counts:<channel>``        HASH    state -> number of jobs of that channel
``P channels``                SET     every channel that ever had a job
``P ready:<channel>``         ZSET    claimable queued jobs (see :func:`order_key`)
``P queued_at:<channel>``     ZSET    queued job ids, score = run_at (oldest queued job)
``P gq:<group>``              ZSET    every queued job of a group (same encoding)
``P grep``                    HASH    group -> its one member currently in a ready set
``P glock``                   HASH    group -> id of its running job
``P due``                     ZSET    scheduled job ids, score = run_at
``P wait``                    ZSET    waiting job ids (durable waits), score = run_at
                                      (``NEVER`` for a token without a timeout); never
                                      in a ready set: only ``resume_due`` and
                                      ``complete_token`` take a job out of it
``P steps:<id>``              HASH    the job's durable steps: name -> ``<n> <at>
                                      <result>`` (n = its place in storing order, 1..;
                                      at a time string; result JSON text)
``P toks:<id>``               LIST    the ids of the job's tokens, oldest first
``P tok:<token id>``          HASH    one token: job_id, state (pending|completed|
                                      expired), tags (JSON), created_at, and when set
                                      expires_at, data (JSON), completed_at
``P leases``                  ZSET    running job ids, score = lease_expires_at
``P done:<state>``            ZSET    terminal job ids, score = finished_at (pruning,
                                      throughput)
``P idem``                    HASH    tenant-scoped idempotency key -> job id
``P paused``                  SET     paused channels (a channel named ``*`` is just one)
``P paused_all``              STRING  present while every channel is paused
``P marker``                  ZSET    wake-up marker for workers of every channel
``P marker:<channel>``        ZSET    wake-up marker for workers of that channel
``P waiters``                 HASH    waiter id -> an idle worker's standing claim (JSON)
``P hand:<waiter>``           ZSET    jobs an enqueue claimed for that waiter (JSON)
``P events``                  STREAM  every event of the queue (``read_events``)
``P lock:<name>``             HASH    a named lease: owner, expires_at (caller's clock)
``P crons``                   SET     cron schedule names
``P cron:<name>``             HASH    one cron schedule
``P workers``                 HASH    worker id -> its registration (JSON, see
                                      :mod:`~conveyor.backends.redis.ops`)
``P workers_exp``             ZSET    worker ids, score = expires_at (dropped once
                                      expired, when workers are listed)
``P climits``                 HASH    channel -> its stored limits (JSON, see
                                      :mod:`~conveyor.backends.redis.ops`)
``P lon:<channel>``           STRING  present (with a TTL) while claims with limits or
                                      fairness use the channel's lanes (below)
``P lane:<lane>``             ZSET    the queued jobs of one lane: channel, name, tenant
                                      and group (same encoding as ready sets); kept only
                                      while ``P lon:<channel>`` exists
``P lh:<channel>``            ZSET    the first member of each lane of the channel
                                      (member: ready-set member + lane id)
``P lreg:<channel>``          SET     the channel's lane ids (to drop them)
``P lchans``                  SET     channels that have lanes (prune drops the lanes
                                      of a channel whose ``P lon:`` expired)
``P rs:<rate key>``           HASH    starts under one rate limit and key value, per
                                      span (``ClaimLimit.span``): field = the span's
                                      number (its start / span), value =
                                      ``<count>:<latest start>``
``P deps:<id>``               LIST    the ids the job depends on (workflows, see
                                      ``_lib_workflow.lua``), kept until it is deleted
``P dnts:<id>``               SET     the jobs still waiting on this one (its dependents);
                                      deleted when it finishes or is deleted
``P batch:<id>``              HASH    one batch: total, completed, failed, cancelled,
                                      state, created_at, callback (its job's enqueue
                                      arguments, JSON), callback_job_id
============================  ======  ====================================================

Lane and rate-key ids are length-prefixed values (``<len>:<value>``, ``-`` for None)
concatenated, so different values never name the same key. A group's glock entry is
the running member's id, or several ids joined by ``,`` while a ``Limit(n, key="group")``
lets more than one member of the group run.

A job's hash holds ``wait_token`` (the token a waiting job waits on; ``""`` or absent:
none; cleared by every transition out of ``waiting``) and ``has_tokens`` (``"1"`` once a
token was stored for it, so deleting a job reads ``P toks:<id>`` only when there is
something to delete). Steps and tokens go with their job (prune, ``delete_jobs``,
``Outcome.remove``).

Workflow fields of a job's hash (absent on other jobs, and read in the HMGET a
transition does anyway, so a plain job pays nothing for them): ``has_deps`` (``"1"``:
``P deps:<id>`` exists), ``dep_wait`` (while it waits on dependencies, how many are
unfinished; ``""`` otherwise), ``on_dep_fail`` (``"run"``; absent: cancel),
``has_dependents`` (``"1"`` while ``P dnts:<id>`` may hold ids), ``batch_id`` (a member of
that batch), ``batch_counted`` (its end was counted in its batch), ``batch_of`` (the
callback job of that batch).

User data (channels, groups, lock and cron names, token ids) only ever appears as the
*suffix* of a key family (step names only as hash fields), so two different values can
never name the same key. The Lua scripts build
keys with the same table (:func:`lua_prelude` renders it), so Python and Lua cannot drift.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

__all__ = ["FAMILIES", "FIXED", "Keys", "base", "lua_prelude", "order_key", "scan_pattern"]

FIXED: dict[str, str] = {
    "id": "id",
    "all": "all",
    "channels": "channels",
    "grep": "grep",
    "glock": "glock",
    "due": "due",
    "wait": "wait",
    "leases": "leases",
    "idem": "idem",
    "paused": "paused",
    "paused_all": "paused_all",
    "marker": "marker",
    "waiters": "waiters",
    "stream": "events",
    "crons": "crons",
    "workers": "workers",
    "workers_exp": "workers_exp",
    "climits": "climits",
    "lchans": "lchans",
}
"""Keys without a variable part: Python/Lua name -> key suffix."""

FAMILIES: dict[str, str] = {
    "job": "job:",
    "events": "ev:",
    "logs": "log:",
    "state": "st:",
    "counts": "counts:",
    "ready": "ready:",
    "queued_at": "queued_at:",
    "gq": "gq:",
    "done": "done:",
    "marker_ch": "marker:",
    "hand": "hand:",
    "lock": "lock:",
    "cron": "cron:",
    "steps": "steps:",
    "job_tokens": "toks:",
    "token": "tok:",
    "deps": "deps:",
    "dnts": "dnts:",
    "batch": "batch:",
    "lon": "lon:",
    "lane": "lane:",
    "lheads": "lh:",
    "lreg": "lreg:",
    "rspans": "rs:",
}
"""Key families with a variable suffix: Python/Lua name -> key infix."""


def base(prefix: str) -> str:
    """The common start of every key of the queue: ``{<prefix>}:``."""
    return "{" + prefix + "}:"


def scan_pattern(prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for every key of the queue (for clean-up scripts)."""
    return base(prefix) + "*"


def order_key(run_at: float) -> str:
    """16 hex digits that sort (as bytes) exactly like ``run_at`` sorts as a float.

    The IEEE-754 bits of a double, with the sign bit flipped for positive numbers and all
    bits flipped for negative ones, order like the numbers themselves; no precision is
    lost (a decimal fixed-point encoding would round sub-millisecond differences).
    """
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(run_at)))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


class Keys:
    """Key names of one queue (the Python side of the layout in the module docstring)."""

    __slots__ = ("base",)

    def __init__(self, prefix: str) -> None:
        self.base = base(prefix)

    def fixed(self, name: str) -> str:
        """A key without a variable part, by its :data:`FIXED` name."""
        return self.base + FIXED[name]

    def _family(self, name: str, suffix: str | int) -> str:
        return self.base + FAMILIES[name] + str(suffix)

    def job(self, job_id: int | str) -> str:
        return self._family("job", job_id)

    def events(self, job_id: int | str) -> str:
        return self._family("events", job_id)

    def logs(self, job_id: int | str) -> str:
        return self._family("logs", job_id)

    def state(self, state: str) -> str:
        return self._family("state", state)

    def counts(self, channel: str) -> str:
        return self._family("counts", channel)

    def ready(self, channel: str) -> str:
        return self._family("ready", channel)

    def marker_ch(self, channel: str) -> str:
        return self._family("marker_ch", channel)

    def hand(self, waiter: str) -> str:
        return self._family("hand", waiter)

    def lock(self, name: str) -> str:
        return self._family("lock", name)

    def cron(self, name: str) -> str:
        return self._family("cron", name)

    def steps(self, job_id: int | str) -> str:
        return self._family("steps", job_id)

    def job_tokens(self, job_id: int | str) -> str:
        return self._family("job_tokens", job_id)

    def token(self, token_id: str) -> str:
        return self._family("token", token_id)

    def deps(self, job_id: int | str) -> str:
        return self._family("deps", job_id)

    def batch(self, batch_id: str) -> str:
        return self._family("batch", batch_id)

    @property
    def id(self) -> str:
        return self.fixed("id")

    @property
    def channels(self) -> str:
        return self.fixed("channels")

    @property
    def paused(self) -> str:
        return self.fixed("paused")

    @property
    def paused_all(self) -> str:
        return self.fixed("paused_all")

    @property
    def marker(self) -> str:
        return self.fixed("marker")

    @property
    def waiters(self) -> str:
        return self.fixed("waiters")

    @property
    def stream(self) -> str:
        return self.fixed("stream")

    @property
    def crons(self) -> str:
        return self.fixed("crons")

    @property
    def workers(self) -> str:
        return self.fixed("workers")

    @property
    def workers_exp(self) -> str:
        return self.fixed("workers_exp")

    @property
    def climits(self) -> str:
        return self.fixed("climits")


def lua_prelude(names: Collection[str] | None = None) -> str:
    """Lua that defines ``K``, the same key layout, from the base ``P`` (``ARGV[1]``).

    Args:
        names: only these entries (a script pays for every entry on every call); None
            for all of them.
    """
    lines = ["-- generated by conveyor.backends.redis.keys.lua_prelude()", "local K = {"]
    for name, suffix in FIXED.items():
        if names is None or name in names:
            lines.append(f'  {name} = P .. "{suffix}",')
    for name, infix in FAMILIES.items():
        if names is None or name in names:
            lines.append(f'  {name} = function(x) return P .. "{infix}" .. x end,')
    return "\n".join(lines) + "\n}\n"
