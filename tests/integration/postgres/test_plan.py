"""The claim reads the partial index only: a large history of finished jobs costs it
nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from conveyor.backends.postgres import codec
from conveyor.backends.postgres.backend import PostgresBackend
from tests.integration.postgres.helpers import NOW, claim_params, enqueue, new_job

HISTORY = 50_000


async def _fill_history(admin: psycopg.AsyncConnection[Any], schema: str) -> None:
    await admin.execute(
        f'INSERT INTO "{schema}".jobs (state, name, channel, payload, run_at, created_at,'
        " finished_at, attempts)"
        " SELECT 'completed', 'old', 'default', '{}', to_timestamp(%s) - i * interval '1 s',"
        " to_timestamp(%s), to_timestamp(%s), 1 FROM generate_series(1, %s) AS i",
        [NOW, NOW, NOW, HISTORY],
    )
    await admin.execute(f'ANALYZE "{schema}".jobs')


async def _explain(
    admin: psycopg.AsyncConnection[Any], sql: str, args: dict[str, Any]
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim, rolled back so nothing is claimed."""
    async with admin.transaction(force_rollback=True):
        cur = await admin.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, args)
        row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]
    return plan


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_nodes(child))
    return out


async def test_claim_uses_the_partial_index_whatever_the_history(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await _fill_history(admin, schema)
    await enqueue(backend, *(new_job(channel="a" if i % 2 else "b") for i in range(200)))
    await admin.execute(f'ANALYZE "{schema}".jobs')
    for channels, index in ((None, "jobs_claim_idx"), (("a",), "jobs_claim_channel_idx")):
        plan = await _explain(
            admin,
            backend.queries.claim(channels),
            codec.claim_args(claim_params(channels=channels)),
        )
        nodes = _nodes(plan["Plan"])
        scans = [n for n in nodes if n.get("Relation Name") == "jobs" and "Scan" in n["Node Type"]]
        assert any(n.get("Index Name") == index for n in scans), json.dumps(plan)[:3000]
        assert not any(n["Node Type"] == "Seq Scan" for n in scans), json.dumps(plan)[:3000]
        # the 50k finished rows are never visited: a handful of pages per claim
        assert plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"] < 400
        claimed = [
            n for n in nodes if n.get("Relation Name") == "jobs" and n["Node Type"] == "ModifyTable"
        ]
        assert claimed and claimed[0]["Actual Rows"] == 10
