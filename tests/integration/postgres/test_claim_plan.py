"""The claim's plan: an ordered scan of a claim index that stops after the batch, never a
scan and sort of every due queued job, even when the table statistics lag behind the
queue: here a new table, not analysed yet, into which a burst of jobs arrived."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.backends.base import ClaimParams, EnqueueParams
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.backend import PostgresBackend
from tests.integration.postgres.helpers import NOW, done, new_job

CLAIM_INDEXES = {"jobs_claim_idx", "jobs_claim_channel_idx"}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", ()):
        out += _nodes(child)
    return out


def _candidate_scan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of the claim's candidate CTE (`cand` in queries.sql)."""
    [cand] = [n for n in _nodes(plan) if n.get("Subplan Name") == "CTE cand"]
    return _nodes(cand)


@pytest.mark.parametrize("complete", [False, True], ids=["claim", "complete_claim"])
@pytest.mark.parametrize(
    "channels", [None, ("default",), ("default", "other")], ids=["all", "one", "many"]
)
async def test_claim_walks_a_claim_index_in_order_despite_stale_statistics(
    backend: PostgresBackend,
    channels: tuple[str, ...] | None,
    complete: bool,
) -> None:
    # a new table, never analysed yet (autovacuum gets to it within a minute or so)
    burst = [new_job(channel="other" if i % 3 == 0 else "default") for i in range(3000)]
    await backend.enqueue_many(EnqueueParams(burst, NOW))
    work = ClaimParams("w", "tok", 25, NOW + 1, NOW + 31)
    jobs = await backend.claim(work)
    for _ in range(40):  # a worker at work
        _, jobs = await backend.complete_and_claim([done(j.id) for j in jobs], work)

    claim = ClaimParams("w", "tok", 10, NOW + 1, NOW + 31, channels=channels)
    args = codec.claim_args(claim)
    args.update(codec.complete_args([], backend.notify_channel))
    sql = backend.queries.claim(channels, complete=complete)
    async with backend._connection() as conn:  # a pooled connection, as the worker's
        cur = await conn.execute("EXPLAIN (FORMAT JSON) " + sql, args)
        [[explained]] = await cur.fetchall()
    nodes = _candidate_scan(explained[0]["Plan"])
    types = [n["Node Type"] for n in nodes]
    assert "Sort" not in types, types
    scans = [n for n in nodes if n.get("Relation Name") == "jobs"]
    assert len(scans) == 1, types
    assert scans[0]["Node Type"] == "Index Scan", types
    assert scans[0]["Index Name"] in CLAIM_INDEXES
