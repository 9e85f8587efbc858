"""PostgreSQL only: flow control beyond the shared suite (test_limits.py).

A claim skips a full key's backlog through the indexes: with 100,000 queued jobs of one
full key ahead in claim order it returns the allowed jobs and reads only a few hundred
index entries (counted inside the claim's transaction, with and without fresh planner
statistics); concurrent limited claimers never overshoot a limit (the advisory lock per
scope); ``complete_and_claim`` frees the slots of the jobs it completes for its own
claim; fair rounds across channels; the start log is pruned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import ClaimLimit
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.limits import limit_args
from conveyor.backends.postgres.sqlfiles import native
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    claim_params,
    enqueue,
    get,
    new_job,
    outcome,
)
from tests.conftest import PG_URL, require_backend

BACKLOG = 100_000


@pytest.fixture
def kind() -> str:
    require_backend("postgres")
    return "postgres"


@pytest.fixture
async def pg(store: Store) -> PostgresBackend:
    backend = await store.connected()
    assert isinstance(backend, PostgresBackend)
    return backend


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        yield conn


async def backlog(
    admin: psycopg.AsyncConnection[Any], schema: str, name: str, **columns: str
) -> None:
    """BACKLOG queued jobs named ``name`` ahead of everything (priority -5), in one
    statement; ``columns``: tenant / group_key / channel values."""
    channel = columns.get("channel", "default")
    await admin.execute(
        f'INSERT INTO "{schema}".jobs (state, name, payload, run_at, created_at, priority,'
        " channel, tenant, group_key)"
        " SELECT 'queued', %s, '{}', to_timestamp(%s - 1000 + g * 0.001),"
        " to_timestamp(%s - 1000), -5, %s, %s, %s FROM generate_series(1, %s) g",
        [name, NOW, NOW, channel, columns.get("tenant"), columns.get("group_key"), BACKLOG],
    )


async def claim_counted(
    admin: psycopg.AsyncConnection[Any], pg: PostgresBackend, params: Any
) -> tuple[list[tuple[Any, ...]], int, int]:
    """The limited claim in a transaction of its own (rolled back): its rows, the index
    entries and the heap rows of ``jobs`` it read by sequential scan (this
    transaction's statistics)."""
    sql, names = native(pg.queries["limited_claim"])
    args = limit_args(params)
    async with admin.transaction(force_rollback=True):
        cur = psycopg.AsyncRawCursor(admin)
        await cur.execute(sql, [args[n] for n in names])
        rows = await cur.fetchall()
        cur = await admin.execute(
            "SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0),"
            " pg_stat_get_xact_tuples_returned(%s::regclass)"
            " FROM pg_index i WHERE i.indrelid = %s::regclass",
            [f'"{pg.schema}".jobs', f'"{pg.schema}".jobs'],
        )
        read = await cur.fetchone()
        assert read is not None
    return rows, int(read[0]), int(read[1])


CASES = {
    # case: (the backlog's columns, the limits, the fairness)
    "name": ({}, (ClaimLimit("name", "busy", None, 1),), ()),
    "tenant": ({"tenant": "a"}, (ClaimLimit("name", "busy", "tenant", 1),), ()),
    "group": ({"group_key": "g"}, (ClaimLimit("name", "busy", "group", 1),), ()),
    "channel": ({"channel": "bulk"}, (ClaimLimit("channel", "bulk", None, 1),), ()),
    "rate": ({"tenant": "a"}, (ClaimLimit("name", "busy", "tenant", 1, 60.0),), ()),
    "fair": ({"tenant": "a"}, (), (("default", "tenant"),)),
}


@pytest.mark.parametrize("stats", ["stale", "analyzed"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_full_key_backlog_is_skipped_through_the_indexes(
    pg: PostgresBackend,
    admin: psycopg.AsyncConnection[Any],
    case: str,
    stats: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    columns, limits, fair = CASES[case]
    await backlog(admin, pg.schema, "busy", **columns)
    allowed = await enqueue(
        pg,
        *(new_job("busy", tenant="b", group="h") for _ in range(1)),
        *(new_job("other") for _ in range(8)),
    )
    if stats == "analyzed":
        await admin.execute(f'ANALYZE "{pg.schema}".jobs')
    if limits:  # fill the backlog's key: one of it runs (or started, for the rate)
        first = await claim(pg, token="first", limit=1, limits=limits)
        assert [(j.name, j.priority) for j in first] == [("busy", -5)]
    params = claim_params(token="t", limit=10, limits=limits, fair=fair)
    rows, index_read, seq_read = await claim_counted(admin, pg, params)
    ids = [row[0] for row in rows]
    if case == "fair":  # tenants a (the backlog), b, and none (the others) take turns
        assert [row[7] for row in rows] == ["a", "b", None, "a", None, "a", None, "a", None, "a"]
        assert [i for i in ids if i in allowed] == allowed[:5]
    elif case == "name":  # every job named "busy" is held back
        assert ids == allowed[1:]
    else:  # tenant "b", group "h", channel "default" and the other name are not full
        assert ids == allowed
    assert seq_read == 0
    assert index_read < 2_000, f"read {index_read} index entries for {BACKLOG} held back"
    start = time.perf_counter()
    taken = await claim_ids(pg, token="timed", limit=10, limits=limits, fair=fair)
    took = time.perf_counter() - start
    assert len(taken) == len(ids)
    assert took < 1.0
    with capsys.disabled():
        print(f"\n  [{case}/{stats}] claim past {BACKLOG} held back: {took * 1000:.1f} ms,"
              f" {index_read} index entries read")  # fmt: skip


async def test_concurrent_claimers_never_overshoot_a_limit(store: Store) -> None:
    backends = [await store.connected() for _ in range(4)]
    await enqueue(backends[0], *(new_job("scarce") for _ in range(40)))
    limits = (ClaimLimit("name", "scarce", None, 3), ClaimLimit("name", "scarce", None, 5, 60.0))

    async def claimer(i: int) -> int:
        taken = 0
        for round_ in range(5):
            taken += len(await claim(backends[i], token=f"c{i}-{round_}", limit=2, limits=limits))
        return taken

    totals = await asyncio.gather(*(claimer(i) for i in range(len(backends))))
    assert sum(totals) == 3  # never more than 3 running at once, whoever claims
    counts = await backends[0].counts(None)
    assert counts["running"] == 3 and counts["queued"] == 37


async def test_complete_and_claim_frees_the_slots_it_completes(pg: PostgresBackend) -> None:
    ids = await enqueue(pg, *(new_job("one") for _ in range(3)))
    limits = (ClaimLimit("name", "one", None, 1),)
    assert await claim_ids(pg, token="a", limits=limits) == [ids[0]]
    applied, jobs = await pg.complete_and_claim(
        [outcome(ids[0], "a")], claim_params(token="b", limits=limits)
    )
    assert applied == [True]
    assert [j.id for j in jobs] == [ids[1]]  # the completed job's slot is free at once
    applied, jobs = await pg.complete_and_claim(
        [outcome(ids[0], "a")], claim_params(token="c", limits=limits)
    )
    assert applied == [False] and jobs == []  # a stale outcome frees nothing
    assert (await get(pg, ids[2])).state == JobState.QUEUED


async def test_fair_rounds_mix_with_other_channels(pg: PostgresBackend) -> None:
    a = await enqueue(pg, *(new_job("f", tenant="a", channel="fair") for _ in range(3)))
    plain = await enqueue(pg, new_job("p", channel="plain", priority=1))
    taken = await claim_ids(pg, token="t", limit=4, fair=(("fair", "tenant"),))
    # round 1: a[0] (priority 0) and the plain job (priority 1); then a's later rounds
    assert taken == [a[0], plain[0], a[1], a[2]]


async def test_old_starts_are_pruned_by_the_claims(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    await enqueue(pg, *(new_job("api") for _ in range(4)))
    limits = (ClaimLimit("name", "api", None, 2, 10.0),)
    assert len(await claim(pg, token="a", limits=limits)) == 2
    cur = await admin.execute(f'SELECT count(*) FROM "{pg.schema}".limit_starts')
    assert (await cur.fetchone()) == (2,)
    assert len(await claim(pg, token="b", limits=limits, now=NOW + 11)) == 2
    cur = await admin.execute(f'SELECT count(*) FROM "{pg.schema}".limit_starts')
    assert (await cur.fetchone()) == (2,)  # the two older than the window are gone
