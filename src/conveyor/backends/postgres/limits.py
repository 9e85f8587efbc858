"""Flow control on PostgreSQL (DESIGN.md "Flow control: limits and fairness"): the claim
with limits or fairness, and the stored channel limits.

- A claim whose ``ClaimParams.limits`` and ``fair`` are both empty is the plain claim of
  ``queries.sql``, untouched (:meth:`~.backend.PostgresBackend.claim` checks that first).
- Any other claim is one call of the ``claim_limited()`` function (created by migration
  0005, replaced by 0007 and 0008, which document it): one statement, one round trip,
  one commit.
  A PL/pgSQL function because exact limits across workers need the count to be read
  *after* the claimers of a scope are serialised (an advisory lock): a single SQL
  statement reads everything from the snapshot it took before it could wait for that
  lock. Running jobs are counted from the store (a rescued job's slot is free at once);
  rate starts are kept per span (``limit_starts``: one row per limit, key value and span
  of ``conveyor.limits.rate_span(per)``, its count added to by an upsert in the claim's
  transaction), so a window costs a claim at most 51 rows per key value (a window of
  over 50 s: one per second), however many jobs started in it.
- Full keys are skipped through indexes, never walked: while no key is full and no
  claimed channel is fair, the first pass reads the claim order itself (as the plain
  claim); once limits hold jobs back, the claim reads the due jobs per (channel, name)
  stream (``jobs_claim_stream_idx``), and per key value (``jobs_claim_tenant_idx`` /
  ``jobs_claim_group_idx``) where a keyed limit has full values or the channel is fair;
  a full stream or value is never read.
- ``complete_and_claim`` with limits: the steps of ``complete_many`` and the function
  call in one statement (``limited_complete_claim_select``).
- Channel limits: the ``channel_limits`` table, one row per channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor.backends.base import ClaimedJob, ClaimParams, Outcome, as_stored
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.listener import Signal
from conveyor.backends.postgres.sqlfiles import Queries
from conveyor.backends.records import ChannelLimitRecord

__all__ = ["LimitVerbs", "limit_args"]


def limit_args(params: ClaimParams) -> dict[str, Any]:
    """The parameters of the limited claim: those of the plain one, and the limits and
    the fairness as parallel arrays."""
    args = codec.claim_args(params)
    limits = params.limits
    args.update(
        l_scope=[lim.scope for lim in limits],
        l_target=[lim.target for lim in limits],
        l_key=[lim.key for lim in limits],
        l_n=[lim.n for lim in limits],
        l_per=[None if lim.per is None else float(lim.per) for lim in limits],
        f_channel=[channel for channel, _ in params.fair],
        f_by=[by for _, by in params.fair],
    )
    return args


class LimitVerbs:
    """The flow-control verbs of :class:`~.backend.PostgresBackend` (a mixin: it uses the
    backend's pool, queries and wake-up signals)."""

    queries: Queries
    notify_channel: str
    _events: Signal
    _work: Signal
    _fetch: Callable[[str, str, dict[str, Any]], Awaitable[list[Any]]]

    async def _claim_limited(self, params: ClaimParams) -> list[ClaimedJob]:
        rows = await self._fetch("claim", self.queries["limited_claim"], limit_args(params))
        if rows:
            self._events.fire()
        return [codec.claimed_job(row, params.token) for row in rows]

    async def _complete_and_claim_limited(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """As ``complete_and_claim``, the claim being the limited one."""
        args = limit_args(claim)
        wait = codec.has_wait(outcomes)
        args.update(codec.complete_args(outcomes, self.notify_channel, wait))
        query = self.queries[f"complete_{'wait_' if wait else ''}limited"]
        rows = await self._fetch("complete and claim", query, args)
        first = rows[0]
        done = set(first[0] or ())
        as_stored(outcomes, first[18] or {})
        if first[1]:
            self._work.fire()
        if done or first[2] is not None:
            self._events.fire()
        jobs = [codec.claimed_job(row[2:], claim.token) for row in rows if row[2] is not None]
        return [i in done for i in range(len(outcomes))], jobs

    # -- stored channel limits ----------------------------------------------------------
    async def set_channel_limits(self, record: ChannelLimitRecord) -> None:
        if (
            record.concurrency is None
            and record.rate_n is None
            and record.rate_per is None
            and record.fair_by is None
        ):
            await self._fetch(
                "set_channel_limits",
                self.queries["delete_channel_limits"],
                {"channel": record.channel},
            )
            return
        await self._fetch(
            "set_channel_limits",
            self.queries["set_channel_limits"],
            {
                "channel": record.channel,
                "concurrency": record.concurrency,
                "rate_n": record.rate_n,
                "rate_per": record.rate_per,
                "fair_by": record.fair_by,
            },
        )

    async def list_channel_limits(self) -> list[ChannelLimitRecord]:
        rows = await self._fetch("list_channel_limits", self.queries["list_channel_limits"], {})
        return [
            ChannelLimitRecord(
                channel=r[0],
                concurrency=None if r[1] is None else int(r[1]),
                rate_n=None if r[2] is None else int(r[2]),
                rate_per=None if r[3] is None else float(r[3]),
                fair_by=r[4],
            )
            for r in rows
        ]
