"""PostgreSQL only: flow control beyond the shared suite (test_limits.py).

A claim skips a full key's backlog through the indexes: with 100,000 queued jobs of one
full key ahead in claim order it returns the allowed jobs and reads only a few hundred
index entries (counted inside the claim's transaction, with and without fresh planner
statistics); concurrent limited claimers never overshoot a limit (the advisory lock per
scope); ``complete_and_claim`` frees the slots of the jobs it completes for its own
claim; a job whose row lock another transaction holds gives its slot to the next one;
fair rounds across channels. The start log of rate limits holds one row per
span (``rate_span``) and key value: a window holds at most 51 of them however many
starts, expired spans are deleted by the claims, and a store upgraded from the per-start
log (version 6) keeps counting the old rows exactly until they leave the window."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import ClaimLimit
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.limits import limit_args
from conveyor.backends.postgres.sqlfiles import bootstrap_sql, migrations, native
from conveyor.limits import rate_span
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

BACKLOG = 100_000


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


@pytest.mark.parametrize("stats", ["stale", "analyzed"])
@pytest.mark.parametrize("channels", ["all", "one", "two"])
async def test_the_first_pass_reads_the_claim_order_through_the_index(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any], stats: str, channels: str
) -> None:
    # no key is full: the first pass reads the first due jobs in claim order, an ordered
    # index scan whatever the planner's statistics say, never the whole queue
    await backlog(admin, pg.schema, "busy")
    if stats == "analyzed":
        await admin.execute(f'ANALYZE "{pg.schema}".jobs')
    chans = {"all": None, "one": ("default",), "two": ("default", "other")}[channels]
    limits = (ClaimLimit("name", "busy", None, 1_000),)
    params = claim_params(token="t", limit=10, limits=limits, channels=chans)
    rows, index_read, seq_read = await claim_counted(admin, pg, params)
    assert [(row[1], row[6]) for row in rows] == [("busy", -5)] * 10
    assert seq_read == 0
    assert index_read < 2_000, f"read {index_read} index entries of {BACKLOG} queued"


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


async def test_a_job_whose_row_lock_is_taken_gives_its_slot_back(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    # a pass locks the jobs it admitted in one statement: one whose row another
    # transaction holds is not taken, and its slot goes to the next job in claim order
    ids = await enqueue(pg, *(new_job("sync") for _ in range(4)))
    limits = (ClaimLimit("name", "sync", None, 2),)
    async with admin.transaction(force_rollback=True):
        await admin.execute(f'SELECT 1 FROM "{pg.schema}".jobs WHERE id = %s FOR UPDATE', [ids[0]])
        assert await claim_ids(pg, token="a", limits=limits) == ids[1:3]
    assert (await get(pg, ids[0])).state == JobState.QUEUED
    assert await claim_ids(pg, token="b", limits=limits) == []  # two run: the limit is full


async def test_a_group_whose_admitted_job_loses_its_lock_is_free_again(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    # the first member is admitted, holds its group for the pass, then loses its row
    # lock: the group is free again and its next member is taken (as a plain claim would)
    ids = await enqueue(pg, new_job("gj", group="g"), new_job("gj", group="g"))
    limits = (ClaimLimit("name", "other", None, 1),)
    async with admin.transaction(force_rollback=True):
        await admin.execute(f'SELECT 1 FROM "{pg.schema}".jobs WHERE id = %s FOR UPDATE', [ids[0]])
        assert await claim_ids(pg, token="a", limits=limits) == [ids[1]]


async def test_fair_rounds_mix_with_other_channels(pg: PostgresBackend) -> None:
    a = await enqueue(pg, *(new_job("f", tenant="a", channel="fair") for _ in range(3)))
    plain = await enqueue(pg, new_job("p", channel="plain", priority=1))
    taken = await claim_ids(pg, token="t", limit=4, fair=(("fair", "tenant"),))
    # round 1: a[0] (priority 0) and the plain job (priority 1); then a's later rounds
    assert taken == [a[0], plain[0], a[1], a[2]]


async def spans(
    admin: psycopg.AsyncConnection[Any], schema: str
) -> list[tuple[str, str | None, float, int]]:
    """The rows of the start log: (lim, keyval, end as epoch seconds, starts), ordered."""
    return [row[:4] for row in await spans_latest(admin, schema)]


async def spans_latest(
    admin: psycopg.AsyncConnection[Any], schema: str
) -> list[tuple[str, str | None, float, int, float]]:
    """As :func:`spans`, each with its latest start (epoch seconds) last."""
    cur = await admin.execute(
        "SELECT lim, keyval, extract(epoch FROM at)::float8, n,"
        f' extract(epoch FROM latest)::float8 FROM "{schema}".limit_starts'
        " ORDER BY lim, keyval, at"
    )
    return [(r[0], r[1], float(r[2]), int(r[3]), float(r[4])) for r in await cur.fetchall()]


async def test_expired_spans_are_deleted_by_the_claims(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    await enqueue(pg, *(new_job("api") for _ in range(6)))
    limits = (ClaimLimit("name", "api", None, 2, 10.0),)
    assert len(await claim(pg, token="a", limits=limits)) == 2
    # the claim's two starts are one span row, ending one span (0.2 s) after NOW
    [(lim, keyval, end, n)] = await spans(admin, pg.schema)
    assert (lim, keyval, n) == ("name::api", None, 2)
    assert end == pytest.approx(NOW + rate_span(10.0), abs=1e-6)
    # claims delete in the first of every 10 spans: a claim in another span deletes
    # nothing, one in such a span deletes what is older than the window and a second of
    # slack (for a claimer whose clock is behind)
    w = rate_span(10.0)

    def deleting(after: float) -> float:
        """The middle of the first deleting span that starts after ``after``."""
        return (math.floor(after / (10 * w)) + 1) * 10 * w + w / 2

    b = deleting(NOW + 10.9) - 5 * w  # a span that does not delete, past the slack
    assert b > NOW + 11
    assert len(await claim(pg, token="b", limit=1, limits=limits, now=b)) == 1
    assert len(await spans(admin, pg.schema)) == 2
    c = deleting(b)
    assert len(await claim(pg, token="c", limit=1, limits=limits, now=c)) == 1
    # the span older than the window and its slack is gone; the new starts are spans
    assert [(r[2], r[3]) for r in await spans(admin, pg.schema)] == [
        (pytest.approx((math.floor(b / w) + 1) * w, abs=1e-6), 1),
        (pytest.approx((math.floor(c / w) + 1) * w, abs=1e-6), 1),
    ]
    # a span within the slack of a deleting claim is kept
    d = deleting(c + 21)
    x = d - 10.5  # half a second older than the window of the claim at d
    assert x > c + 10  # c has left the window of the claim at x
    assert len(await claim(pg, token="x", limit=1, limits=limits, now=x)) == 1
    assert len(await claim(pg, token="d", limit=1, limits=limits, now=d)) == 1
    assert [(r[2], r[3]) for r in await spans(admin, pg.schema)] == [
        (pytest.approx((math.floor(x / w) + 1) * w, abs=1e-6), 1),
        (pytest.approx((math.floor(d / w) + 1) * w, abs=1e-6), 1),
    ]


async def test_a_span_counts_until_its_latest_start_leaves_the_window(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Starts of one instant leave the window exactly ``per`` after it; a span with a
    later start counts (in full) until that one leaves, never longer than its end."""
    ids = await enqueue(pg, *(new_job("api") for _ in range(8)))
    limits = (ClaimLimit("name", "api", None, 2, 10.0),)
    assert await claim_ids(pg, token="a", limits=limits) == ids[:2]
    assert await claim_ids(pg, token="b", limits=limits, now=NOW + 9.999) == []
    assert await claim_ids(pg, token="c", limits=limits, now=NOW + 10) == ids[2:4]
    span = rate_span(10.0)
    later = NOW + 20 + span * 0.5  # in the span that NOW + 20 starts
    assert await claim_ids(pg, token="d", limit=1, limits=limits, now=NOW + 20) == ids[4:5]
    assert await claim_ids(pg, token="e", limit=1, limits=limits, now=later) == ids[5:6]
    rows = await spans_latest(admin, pg.schema)
    assert [(r[3], r[4]) for r in rows if r[2] > NOW + 20] == [(2, pytest.approx(later, abs=1e-6))]
    # the start at NOW + 20 has left at NOW + 30, but its span holds the later one too
    assert await claim_ids(pg, token="f", limits=limits, now=NOW + 30) == []
    assert await claim_ids(pg, token="g", limits=limits, now=later + 10) == ids[6:8]


@pytest.mark.parametrize("per", [1.0, 10.0, 60.0, 3600.0])
async def test_a_start_is_stored_in_the_span_of_rate_span(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any], per: float
) -> None:
    """The function computes the span as conveyor.limits.rate_span does."""
    await enqueue(pg, new_job("api"))
    at = NOW + 0.123
    assert (
        len(await claim(pg, token="a", now=at, limits=(ClaimLimit("name", "api", None, 9, per),)))
        == 1
    )
    w = rate_span(per)
    [(_, _, end, n, latest)] = await spans_latest(admin, pg.schema)
    assert n == 1 and latest == pytest.approx(at, abs=1e-6)
    assert end == pytest.approx((math.floor(at / w) + 1) * w, abs=1e-6)
    assert at < end <= at + w


async def test_a_window_holds_at_most_51_spans_per_key_value(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """2,000 starts in one second, per=1s: one row per span (20 ms) and tenant, never one
    per start, and the spans of an earlier second are deleted as the window moves on."""
    limits = (ClaimLimit("name", "api", "tenant", 1_000_000, 1.0),)
    for second in range(2):
        await enqueue(pg, *(new_job("api", tenant="ab"[i % 2]) for i in range(2000)))
        for i in range(200):  # 200 claims of 10, every 5 ms
            now = NOW + second + i * 0.005
            assert (
                len(await claim(pg, token=f"t{second}-{i}", now=now, limit=10, limits=limits)) == 10
            )
        rows = await spans(admin, pg.schema)
        window = [r for r in rows if r[2] > now - 1.0]
        per_tenant = Counter(r[1] for r in window)
        assert set(per_tenant) == {"a", "b"}
        assert max(per_tenant.values()) <= 51, per_tenant
        # every start of this second is counted; none older than the window and its
        # second of slack (a claimer whose clock is behind) is kept
        assert all(r[2] > now - 2.0 - 1e-6 for r in rows)
        assert sum(r[3] for r in rows if r[1] == "a" and r[2] > NOW + second + 0.001) == 1000
    await enqueue(pg, new_job("api", tenant="a"))
    later = await claim(pg, token="late", now=NOW + 4, limit=1, limits=limits)
    assert len(later) == 1
    assert [r[3] for r in await spans(admin, pg.schema)] == [1]  # both seconds' spans gone


async def test_limits_of_one_identity_share_the_shortest_span(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Two rates on one name (3 per second, 5 per minute): each start is stored once,
    in the span of the shorter window, and each rate counts it."""
    ids = await enqueue(pg, *(new_job("api") for _ in range(8)))
    limits = (ClaimLimit("name", "api", None, 3, 1.0), ClaimLimit("name", "api", None, 5, 60.0))
    assert await claim_ids(pg, token="a", limits=limits) == ids[:3]
    assert [(r[2], r[3]) for r in await spans(admin, pg.schema)] == [
        (pytest.approx(NOW + rate_span(1.0), abs=1e-6), 3)
    ]
    assert await claim_ids(pg, token="b", limits=limits, now=NOW + 0.5) == []
    assert await claim_ids(pg, token="c", limits=limits, now=NOW + 1.1) == ids[3:5]
    assert await claim_ids(pg, token="d", limits=limits, now=NOW + 30) == []
    assert await claim_ids(pg, token="e", limits=limits, now=NOW + 60.1) == ids[5:8]


async def test_a_store_upgraded_mid_window_keeps_counting_its_old_starts(
    store: Store, admin: psycopg.AsyncConnection[Any]
) -> None:
    """A store at version 6 holds one row per start. After the upgrade those rows count
    exactly as before (a start at t while t > now - per) and no burst gets through;
    rows of one start time are merged into one."""
    schema = store.token
    await admin.execute(bootstrap_sql(schema).encode())
    for m in migrations()[:6]:
        await admin.execute(m.sql(schema).encode())
        await admin.execute(
            f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (%s, %s)',
            [m.version, m.name],
        )
    old = [("name::api", None, NOW - 9.5)] * 3 + [("name::api", None, NOW - 9.0)]
    old += [("name::api", None, NOW - 2.0), ("name:tenant:t", "a", NOW - 1.0)]
    old += [("name:tenant:t", "a", NOW - 1.0), ("name:tenant:t", None, NOW - 1.0)]
    for lim, keyval, at in old:
        await admin.execute(
            f'INSERT INTO "{schema}".limit_starts (lim, keyval, at) VALUES (%s, %s, to_timestamp(%s))',
            [lim, keyval, at],
        )
    pg = await store.connected()  # migrates to the spans
    assert isinstance(pg, PostgresBackend)
    assert all(row[2] == row[4] for row in await spans_latest(admin, schema))  # one instant
    assert await spans(admin, schema) == [
        ("name::api", None, NOW - 9.5, 3),
        ("name::api", None, NOW - 9.0, 1),
        ("name::api", None, NOW - 2.0, 1),
        ("name:tenant:t", "a", NOW - 1.0, 2),
        ("name:tenant:t", None, NOW - 1.0, 1),
    ]
    ids = await enqueue(pg, *(new_job("api") for _ in range(10)))
    limits = (ClaimLimit("name", "api", None, 5, 10.0),)
    assert await claim_ids(pg, token="a", limits=limits) == []  # 5 in the window
    assert await claim_ids(pg, token="b", limits=limits, now=NOW + 0.4) == []
    # the three starts at NOW - 9.5 leave the window at NOW + 0.5 exactly
    assert await claim_ids(pg, token="c", limits=limits, now=NOW + 0.5) == ids[:3]
    assert await claim_ids(pg, token="d", limits=limits, now=NOW + 1.0) == ids[3:4]
    assert await claim_ids(pg, token="e", limits=limits, now=NOW + 7.9) == []
    assert await claim_ids(pg, token="f", limits=limits, now=NOW + 8.0) == ids[4:5]
    keyed = (ClaimLimit("name", "t", "tenant", 2, 10.0),)
    t = await enqueue(pg, *(new_job("t", tenant=v) for v in ("a", "b", None, None)))
    taken = await claim_ids(pg, token="g", limits=keyed, now=NOW + 8.0, include=("t",))
    assert taken == [t[1], t[2]]  # tenant a is full (two at NOW - 1), none has one left


@pytest.mark.parametrize("stats", ["stale", "analyzed"])
async def test_a_claim_reads_only_its_own_spans_through_the_index(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any], stats: str
) -> None:
    """A start log with 20,000 spans of another limit and, for the claim's own keyed
    rate, 20 tenants' windows (51 spans each) and 100 expired spans: with the generic
    plans of the pooled connections, the claim scans no part of the log sequentially,
    reads about its own spans only, and deletes the expired ones."""
    log = f'"{pg.schema}".limit_starts'
    await admin.execute(
        f"INSERT INTO {log} (lim, keyval, at, n, latest) SELECT 'name::other', 'k' || (g / 50),"
        " to_timestamp(%s + (g %% 50) * 0.02), 1, to_timestamp(%s - 0.01 + (g %% 50) * 0.02)"
        " FROM generate_series(0, 19999) g",
        [NOW - 0.5, NOW - 0.5],
    )
    await admin.execute(  # per tenant: 5 expired spans (and their slack), 51 in the window
        f"INSERT INTO {log} (lim, keyval, at, n, latest) SELECT 'name:tenant:api',"
        " 't' || (g / 56), to_timestamp(x.at), 1, to_timestamp(x.at - 0.01)"
        " FROM generate_series(0, 20 * 56 - 1) g, LATERAL (SELECT CASE WHEN g %% 56 < 5"
        " THEN %s + (g %% 56) * 0.02 ELSE %s + (g %% 56) * 0.02 END AS at) x",
        [NOW - 2.1, NOW - 1.1],
    )
    if stats == "analyzed":
        await admin.execute(f"ANALYZE {log}")
    await enqueue(pg, *(new_job("api", tenant=f"t{i}") for i in range(5)))
    params = claim_params(token="t", limits=(ClaimLimit("name", "api", "tenant", 1000, 1.0),))
    sql, names = native(pg.queries["limited_claim"])
    args = limit_args(params)
    async with admin.transaction(force_rollback=True):
        await admin.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await admin.execute("SET LOCAL enable_bitmapscan = off")
        cur = psycopg.AsyncRawCursor(admin)
        await cur.execute(sql, [args[n] for n in names])
        assert len(await cur.fetchall()) == 5
        cur = await admin.execute(  # sequential scans of the log, index entries read
            "SELECT pg_stat_get_xact_numscans(%s::regclass),"
            " (SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid))"
            "  FROM pg_index i WHERE i.indrelid = %s::regclass)",
            [log, log],
        )
        read = await cur.fetchone()
        cur = await admin.execute(
            f"SELECT count(*) FROM {log} WHERE lim = 'name:tenant:api' AND at <= to_timestamp(%s)",
            [NOW - 2.0],
        )
        expired = await cur.fetchone()
    assert read is not None and read[0] == 0, read
    # the 20 tenants' windows (counted), the expired spans (deleted), a few upserts
    assert int(read[1]) <= 20 * 51 + 100 + 50, read
    assert expired == (0,)
