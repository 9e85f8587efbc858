"""What only the SQLite backend promises about flow control and the event stream: a claim
skips a full key's 100,000-job backlog through an index (one seek per cell), the ordered
walk and the cell merge take the same jobs, a claim without limits runs no statement of
flow control, rates are counted per span (a bounded number of rows per window, expired
spans deleted, a store with the older one-row-per-start log upgraded without letting a
burst through), and event ids are never handed out twice (also in a store made before
the events table was AUTOINCREMENT)."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.backends.base import ClaimLimit, EnqueueParams, EventRead, NewJob
from conveyor.backends.sqlite import flow
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.connection import Q
from conveyor.limits import rate_span
from conveyor.models import JobState
from conveyor.settings import Settings
from tests.backends.helpers import NOW, claim, claim_ids, enqueue, finish, new_job

BACKLOG = 100_000


def _backend(path: Path) -> SQLiteBackend:
    return SQLiteBackend(Settings.resolve(env={}, url=f"sqlite:///{path}"))


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    made = _backend(tmp_path / "jobs.db")
    await made.migrate()
    try:
        yield made
    finally:
        await made.close()


async def _bulk(backend: SQLiteBackend, jobs: list[NewJob]) -> None:
    for i in range(0, len(jobs), 20_000):
        await backend.enqueue_many(EnqueueParams(jobs[i : i + 20_000], NOW))


def _plan(backend: SQLiteBackend, query: str, args: dict[str, object]) -> str:
    assert backend._conn is not None
    rows = backend._conn.execute("EXPLAIN QUERY PLAN " + Q[query], args).fetchall()
    return "\n".join(str(r[3]) for r in rows)


# -- a full key's backlog is skipped through the index -------------------------------------
async def test_a_full_keys_backlog_of_100000_is_skipped(backend: SQLiteBackend) -> None:
    limits = (ClaimLimit("name", "busy", "tenant", 1),)
    assert await claim(backend, token="fair", fair=(("fair", "tenant"),)) == []  # the index
    await enqueue(backend, new_job("busy", tenant="a", priority=-9))
    assert len(await claim(backend, token="first", limit=1, limits=limits)) == 1  # a is full
    await _bulk(backend, [new_job("busy", tenant="a", priority=-5) for _ in range(BACKLOG)])
    allowed = await enqueue(
        backend, new_job("busy", tenant="b"), *(new_job("free") for _ in range(9))
    )
    start = time.perf_counter()
    taken = await claim_ids(backend, token="x", limit=10, limits=limits)
    took = time.perf_counter() - start
    print(f"\nclaim of 10 behind {BACKLOG} held-back jobs of one full key: {took * 1000:.1f} ms")
    assert taken == allowed
    assert took < 0.5  # one seek per cell, not one row per held-back job (~ms here)


async def test_fairness_with_a_backlog_of_100000_reaches_every_tenant(
    backend: SQLiteBackend,
) -> None:
    await _bulk(backend, [new_job("f", tenant="big", channel="fair") for _ in range(BACKLOG)])
    [small] = await enqueue(backend, new_job("f", tenant="small", channel="fair"))
    fair = (("fair", "tenant"),)
    start = time.perf_counter()
    taken = await claim_ids(backend, token="x", limit=5, fair=fair)  # builds the index
    took = time.perf_counter() - start
    print(f"\nfirst fair claim, building the cells index over {BACKLOG}: {took * 1000:.1f} ms")
    assert small in taken[:2] and len(taken) == 5
    [later] = await enqueue(backend, new_job("f", tenant="later", channel="fair"))
    start = time.perf_counter()
    taken = await claim_ids(backend, token="y", limit=5, fair=fair)
    took = time.perf_counter() - start
    print(f"fair claim of 5 with a {BACKLOG}-job tenant ahead: {took * 1000:.1f} ms")
    assert later in taken[:2] and len(taken) == 5
    assert took < 0.5


async def test_the_cells_index_is_made_by_the_first_claim_that_needs_it(
    backend: SQLiteBackend,
) -> None:
    assert backend._conn is not None
    has = "SELECT 1 FROM sqlite_master WHERE name = 'conveyor_jobs_ready_cells'"
    await enqueue(backend, *(new_job("x") for _ in range(3)))
    await claim(backend, token="a", limit=1)
    await claim(backend, token="b", limit=1, limits=(ClaimLimit("name", "x", None, 5),))
    assert backend._conn.execute(has).fetchone() is None  # no merge needed: no index
    await claim(backend, token="c", limit=1, fair=(("default", "tenant"),))
    assert backend._conn.execute(has).fetchone() is not None


async def test_the_limited_claim_reads_indexes(backend: SQLiteBackend) -> None:
    await enqueue(backend, new_job("x"))
    await claim(backend, token="a", fair=(("default", "tenant"),))  # creates the cells index
    args = {"now": NOW, "channels": None, "include": None, "exclude": None}
    cells = _plan(backend, "flow_cells", args)
    assert "SEARCH n USING INDEX conveyor_jobs_ready_cells (channel=? AND name=? AND" in cells
    assert "SCAN n USING INDEX conveyor_jobs_ready_cells" in cells  # the first cell only
    assert "SCAN j USING INDEX conveyor_jobs_ready" in _plan(backend, "flow_walk", args).split("\n")
    nxt = {
        "channel": "c",
        "name": "n",
        "tenant": "",
        "grp": "",
        "now": NOW,
        "priority": 0,
        "run_at": NOW,
        "id": 1,
        "limit": 5,
    }
    plan = _plan(backend, "flow_cell_next", nxt)
    assert "USING INDEX conveyor_jobs_ready_cells" in plan and "TEMP B-TREE" not in plan
    assert "USING INDEX conveyor_jobs_running" in _plan(backend, "flow_running", {})
    count = {"scope": "name", "target": "x", "key": "", "per": 1.0, "now": NOW}
    window = "SEARCH conveyor_rate_spans USING PRIMARY KEY (scope=? AND target=? AND key=? AND"
    assert f"{window} span_end>?)" in _plan(backend, "starts_count", count)
    assert f"{window} span_end<?)" in _plan(backend, "starts_forget", count)


# -- the walk and the merge agree ------------------------------------------------------------
async def test_the_walk_and_the_cell_merge_take_the_same_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(7)
    names, tenants, groups = ["a", "b", "c"], [None, "t1", "t2"], [None, None, "g1", "g2"]
    jobs = [
        new_job(
            rnd.choice(names),
            channel=rnd.choice(["c1", "c2"]),
            tenant=rnd.choice(tenants),
            group=rnd.choice(groups),
            priority=rnd.randint(-2, 2),
            run_at=NOW - rnd.randint(0, 50),
        )
        for _ in range(400)
    ]
    limits = (
        ClaimLimit("name", "a", "tenant", 2),
        ClaimLimit("name", "b", "group", 2),
        ClaimLimit("channel", "c2", None, 7),
        ClaimLimit("name", "c", None, 5, per=60.0),
    )
    first = _backend(tmp_path / "a.db")
    await first.migrate()
    await enqueue(first, *jobs)
    await claim(first, token="r", limit=6)  # some running jobs (and busy groups)
    await first.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    results = []
    for db, skips in (("a.db", 10**9), ("b.db", -1)):  # the walk only; the merge only
        monkeypatch.setattr(flow, "WALK_SKIPS", skips)
        made = _backend(tmp_path / db)
        rounds = [await claim_ids(made, token=f"k{i}", limit=9, limits=limits) for i in range(8)]
        results.append(rounds)
        await made.close()
    assert results[0] == results[1]
    assert sum(map(len, results[0])) > 9


# -- no limits: today's claim, nothing more ----------------------------------------------------
async def test_a_claim_without_limits_runs_no_flow_control(backend: SQLiteBackend) -> None:
    await enqueue(backend, new_job("plain"))
    assert backend._conn is not None
    seen: list[str] = []
    backend._conn.set_trace_callback(seen.append)
    assert len(await claim(backend, token="a")) == 1
    backend._conn.set_trace_callback(None)
    statements = [s for s in seen if s not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(statements) == 3  # candidates, mark, started events: as before
    assert not any("conveyor_rate_spans" in s or "ready_cells" in s for s in seen)


def _spans(backend: SQLiteBackend) -> list[tuple[str, float, float, int]]:
    """The span log: (value, end, latest start, starts) in key order."""
    assert backend._conn is not None
    rows = backend._conn.execute("SELECT value, span_end, latest, n FROM conveyor_rate_spans")
    return [tuple(r) for r in rows]


async def test_expired_spans_are_deleted_by_the_claims(backend: SQLiteBackend) -> None:
    limits = (ClaimLimit("name", "api", None, 2, per=10.0),)
    span = rate_span(10.0)
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    assert await claim_ids(backend, token="a", limit=5, limits=limits, now=NOW) == ids[:2]
    for job_id in ids[:2]:
        await finish(backend, job_id, "a", at=NOW + 1)
    assert _spans(backend) == [("", NOW + span, NOW, 2)]  # one row for the claim's two starts
    assert await claim_ids(backend, token="b", limit=5, limits=limits, now=NOW + 12) == ids[2:]
    assert _spans(backend) == [("", NOW + 12 + span, NOW + 12, 2)]  # the first span is gone


async def test_starts_of_one_instant_count_exactly(backend: SQLiteBackend) -> None:
    """A claim's starts share one instant: they leave the window exactly ``per`` later,
    not a span later."""
    limits = (ClaimLimit("name", "api", None, 2, per=10.0),)
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    assert await claim_ids(backend, token="a", limit=5, limits=limits, now=NOW) == ids[:2]
    before = math.nextafter(NOW + 10, 0)
    assert await claim_ids(backend, token="b", limit=5, limits=limits, now=before) == []
    assert await claim_ids(backend, token="c", limit=5, limits=limits, now=NOW + 10) == ids[2:]


async def test_a_span_counts_in_full_until_its_latest_start_leaves(
    backend: SQLiteBackend,
) -> None:
    """Two claims in one span: the row counts both until the later one has left the
    window (never a start too few: the earlier one is held a little longer)."""
    span = rate_span(10.0)
    limits = (ClaimLimit("name", "api", None, 2, per=10.0),)
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    assert await claim_ids(backend, token="a", limit=1, limits=limits, now=NOW) == ids[:1]
    late = NOW + span / 2
    assert await claim_ids(backend, token="b", limit=1, limits=limits, now=late) == ids[1:2]
    assert _spans(backend) == [("", NOW + span, late, 2)]
    assert await claim_ids(backend, token="c", limit=5, limits=limits, now=NOW + 10) == []
    before = math.nextafter(late + 10, 0)
    assert await claim_ids(backend, token="d", limit=5, limits=limits, now=before) == []
    assert await claim_ids(backend, token="e", limit=5, limits=limits, now=late + 10) == ids[2:]


async def test_a_claim_behind_in_the_same_span_keeps_its_latest_start(
    backend: SQLiteBackend,
) -> None:
    """A worker whose clock is behind adds to a span another worker already wrote later
    in: the row keeps the later start, so those starts still count until it leaves."""
    span = rate_span(10.0)
    limits = (ClaimLimit("name", "api", None, 3, per=10.0),)
    ids = await enqueue(backend, *(new_job("api") for _ in range(6)))
    ahead, behind = NOW + span * 0.75, NOW + span * 0.25
    assert await claim_ids(backend, token="a", limit=2, limits=limits, now=ahead) == ids[:2]
    assert await claim_ids(backend, token="b", limit=2, limits=limits, now=behind) == ids[2:3]
    assert _spans(backend) == [("", NOW + span, ahead, 3)]
    between = NOW + 10 + span / 2  # the two starts at ahead are still in the window
    assert await claim_ids(backend, token="c", limit=5, limits=limits, now=between) == []
    assert await claim_ids(backend, token="d", limit=5, limits=limits, now=ahead + 10) == ids[3:]


async def test_a_window_keeps_at_most_one_row_per_span_and_value(
    backend: SQLiteBackend,
) -> None:
    """2,000 starts in one second under a rate of 1s, counted per tenant: at most 51 rows
    (one per 20 ms span, and the one the window's start cuts) per tenant, and each start
    counted."""
    per = 1.0
    limits = (ClaimLimit("name", "api", "tenant", 1_000_000, per=per),)
    jobs = [new_job("api", tenant=("a", "b")[i % 2]) for i in range(2_000)]
    await _bulk(backend, jobs)
    for k in range(1_000):  # a claim of one job of each tenant every millisecond
        now = NOW + k * 0.001
        assert len(await claim(backend, token=f"k{k}", limit=2, limits=limits, now=now)) == 2
    spans = _spans(backend)
    per_tenant = {t: [r for r in spans if r[0] == t] for t in ("a", "b")}
    assert {t: sum(r[3] for r in rows) for t, rows in per_tenant.items()} == {"a": 1000, "b": 1000}
    assert all(len(rows) <= per / rate_span(per) + 1 for rows in per_tenant.values())
    assert all(len(rows) >= 50 for rows in per_tenant.values())  # one per span, no fewer
    # once every span of that second is older than the window and a second more (kept
    # for a worker whose clock is behind), the next claim deletes them all
    [late] = await enqueue(backend, new_job("api", tenant="a"))
    later = NOW + 3.5
    assert await claim_ids(backend, token="late", limit=2, limits=limits, now=later) == [late]
    assert [r[0] for r in _spans(backend)] == ["a"]


async def test_a_rate_counts_spans_that_end_after_now(backend: SQLiteBackend) -> None:
    """A span written by a worker whose clock is ahead counts, however far ahead."""
    limits = (ClaimLimit("name", "api", None, 2, per=10.0),)
    ids = await enqueue(backend, *(new_job("api") for _ in range(4)))
    ahead = NOW + 30
    assert await claim_ids(backend, token="a", limit=5, limits=limits, now=ahead) == ids[:2]
    assert await claim_ids(backend, token="b", limit=5, limits=limits, now=NOW) == []


async def test_no_window_ever_holds_more_than_n_starts(backend: SQLiteBackend) -> None:
    """Random claims of two kinds of worker, on clocks that sometimes step back: one
    under Rate(3, 1s) and Rate(8, 5s) of one name and key (its starts in 20 ms spans),
    one under Rate(8, 5s) only (100 ms spans), all in one log. Per tenant, no window of
    5 s ending at a start holds more than 8 starts, and no window of 1 s more than 3
    starts of the first kind."""
    rnd = random.Random(11)
    short = ClaimLimit("name", "api", "tenant", 3, per=1.0)
    long = ClaimLimit("name", "api", "tenant", 8, per=5.0)
    jobs = [new_job("api", tenant=rnd.choice(["a", "b", None])) for _ in range(600)]
    await _bulk(backend, jobs)
    starts: list[tuple[str | None, float, bool]] = []  # tenant, time, under both rates
    now = NOW
    for k in range(400):
        now += rnd.choice([0.0, 0.001, 0.01, 0.05, 0.2, 0.4])
        at = now - rnd.choice([0.0, 0.0, 0.0, 0.005, 0.03, 0.3])  # another worker, behind
        both = rnd.random() < 0.5
        limits = (short, long) if both else (long,)
        taken = await claim(backend, token=f"k{k}", limit=rnd.randint(1, 4), limits=limits, now=at)
        starts.extend((job.tenant, at, both) for job in taken)
    assert len(starts) > 100  # the rates let many through, just never too many
    for tenant, x, _ in starts:
        window = [t for v, t, _ in starts if v == tenant and x - 5.0 < t <= x]
        assert len(window) <= long.n, (tenant, x)
        window = [t for v, t, b in starts if v == tenant and b and x - 1.0 < t <= x]
        assert len(window) <= short.n, (tenant, x)


def test_a_span_ends_after_every_start_it_holds() -> None:
    """The end of the span holding t is later than t and at most two spans later, for any
    t and window (the float division may round either way)."""
    rnd = random.Random(3)
    for _ in range(20_000):
        per = rnd.choice([0.001, 0.3, 1.0, 7.0, 10.0, 60.0, 3600.0, 30 * 86400.0])
        w = rate_span(per)
        t = rnd.choice([NOW, 0.0, 1e9]) + rnd.choice([0, 1, -1]) * rnd.random() * 1e5
        t = rnd.choice([t, math.floor(t / w) * w, math.nextafter(math.floor(t / w) * w, 0)])
        end = flow.span_end(t, w)
        assert t < end <= t + 2 * w + 1e-6


def _old_start_log(path: Path, starts: list[tuple[str, str, str, str | None, float]]) -> None:
    """Make the store's start log as it was before spans (one row per start), with rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        DROP TABLE conveyor_rate_spans;
        CREATE TABLE conveyor_starts (
            scope TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
            at REAL NOT NULL);
        CREATE INDEX conveyor_starts_window ON conveyor_starts (scope, target, key, at);
        """
    )
    conn.executemany("INSERT INTO conveyor_starts VALUES (?, ?, ?, ?, ?)", starts)
    conn.close()


async def test_an_old_start_log_is_upgraded_in_the_middle_of_a_window(tmp_path: Path) -> None:
    """The one-row-per-start log of a store made before spans is moved into the span log
    by migrate: each start still counts exactly while ``at > now - per``, so an upgrade
    in the middle of a window lets no burst above n through."""
    path = tmp_path / "old.db"
    made = _backend(path)
    await made.migrate()
    ids = await enqueue(made, *(new_job("api", tenant="a") for _ in range(6)))
    await made.close()
    _old_start_log(
        path,
        [
            ("name", "api", "", None, NOW - 8),
            ("name", "api", "", None, NOW - 2),  # two starts of one claim
            ("name", "api", "", None, NOW - 2),
            ("name", "api", "", None, NOW - 30),  # out of every window
            ("name", "api", "tenant", "a", NOW - 2),  # another triple, with a value
        ],
    )
    for _ in range(2):  # the second migrate finds nothing more to move
        made = _backend(path)
        await made.migrate()
        await made.close()
    made = _backend(path)
    try:
        assert sorted(_spans_of(path)) == [  # per instant: a row ending at it, its latest start
            ("name", "api", "", "", NOW - 30, NOW - 30, 1),
            ("name", "api", "", "", NOW - 8, NOW - 8, 1),
            ("name", "api", "", "", NOW - 2, NOW - 2, 2),
            ("name", "api", "tenant", "a", NOW - 2, NOW - 2, 1),
        ]
        conn = sqlite3.connect(path)
        old = "SELECT 1 FROM sqlite_master WHERE name LIKE 'conveyor_starts%'"
        assert conn.execute(old).fetchone() is None  # the old table and its index are gone
        conn.close()
        limits = (ClaimLimit("name", "api", None, 3, per=10.0),)
        assert await claim_ids(made, token="a", limit=5, limits=limits, now=NOW) == []
        # the start at NOW - 8 leaves the window at NOW + 2 exactly, as it did
        before = math.nextafter(NOW + 2, 0)
        assert await claim_ids(made, token="b", limit=5, limits=limits, now=before) == []
        assert await claim_ids(made, token="c", limit=5, limits=limits, now=NOW + 2) == ids[:1]
        assert await claim_ids(made, token="d", limit=5, limits=limits, now=NOW + 7.9) == []
        assert await claim_ids(made, token="e", limit=5, limits=limits, now=NOW + 8) == ids[1:3]
        # the keyed rate counts its own converted start
        keyed = (ClaimLimit("name", "api", "tenant", 2, per=10.0),)
        assert await claim_ids(made, token="f", limit=5, limits=keyed, now=NOW + 7) == ids[3:4]
        # the start out of every window was deleted by the first claim
        assert ("name", "api", "", "", NOW - 30, NOW - 30, 1) not in _spans_of(path)
    finally:
        await made.close()


def _spans_of(path: Path) -> list[tuple[str, str, str, str, float, float, int]]:
    conn = sqlite3.connect(path)
    try:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT scope, target, key, value, span_end, latest, n FROM conveyor_rate_spans"
            )
        ]
    finally:
        conn.close()


# -- event ids are never reused -----------------------------------------------------------------
async def test_event_ids_are_never_reused_after_the_newest_is_deleted(
    backend: SQLiteBackend,
) -> None:
    [job_id] = await enqueue(backend, new_job("x"))
    await claim(backend, token="a")
    await finish(backend, job_id, "a")
    page = await backend.read_events(EventRead(after="0:0", limit=10, timeout=0))
    cursor = page.cursor
    newest = int(cursor.split(":")[0])
    await backend.delete_jobs([job_id], NOW)  # deletes the newest events with the job
    [other] = await enqueue(backend, new_job("y"))
    await claim(backend, token="b")
    page = await backend.read_events(EventRead(after=cursor, limit=10, timeout=0))
    stored = [e for e in page.events if e.type == "started"]
    assert [e.job_id for e in stored] == [other]  # not missed behind the reader's cursor
    assert int(page.cursor.split(":")[0]) > newest


def _old_events_table(path: Path) -> None:
    """Make the store's events table as it was before AUTOINCREMENT, with rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        DROP TABLE conveyor_events;
        CREATE TABLE conveyor_events (
            id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, type TEXT NOT NULL,
            job_name TEXT NOT NULL, tenant TEXT, attempt INTEGER NOT NULL, at REAL NOT NULL,
            data TEXT);
        CREATE INDEX conveyor_events_job ON conveyor_events (job_id, id);
        INSERT INTO conveyor_events (id, job_id, type, job_name, tenant, attempt, at, data)
        VALUES (1, 1, 'started', 'x', NULL, 1, 1.0, NULL),
               (7, 1, 'completed', 'x', 't', 1, 2.0, '{"a": 1}');
        """
    )
    conn.close()


async def test_migrate_rebuilds_an_old_events_table_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    made = _backend(path)
    await made.migrate()
    await made.close()
    _old_events_table(path)
    for _ in range(2):  # the second migrate finds it done and changes nothing
        made = _backend(path)
        await made.migrate()
        await made.close()
    conn = sqlite3.connect(path)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'conveyor_events'").fetchone()
    assert "AUTOINCREMENT" in sql[0]
    rows = conn.execute("SELECT id, type, tenant, data FROM conveyor_events ORDER BY id")
    assert rows.fetchall() == [(1, "started", None, None), (7, "completed", "t", '{"a": 1}')]
    index = "SELECT 1 FROM sqlite_master WHERE name = 'conveyor_events_job'"
    assert conn.execute(index).fetchone() is not None
    seq = "SELECT seq FROM sqlite_sequence WHERE name = 'conveyor_events'"
    assert conn.execute(seq).fetchone() == (7,)
    assert (
        conn.execute("SELECT 1 FROM sqlite_master WHERE name LIKE '%_rebuild'").fetchone() is None
    )
    conn.execute("DELETE FROM conveyor_events WHERE id = 7")
    conn.execute(
        "INSERT INTO conveyor_events (job_id, type, job_name, attempt, at) "
        "VALUES (1, 'x', 'x', 1, 3.0)"
    )
    assert conn.execute("SELECT max(id) FROM conveyor_events").fetchone() == (8,)
    conn.close()


async def test_a_limited_job_uses_no_attempt_while_held(backend: SQLiteBackend) -> None:
    ids = await enqueue(backend, new_job("one"), new_job("one"))
    limits = (ClaimLimit("name", "one", None, 1),)
    assert await claim_ids(backend, token="a", limit=5, limits=limits) == [ids[0]]
    assert await claim_ids(backend, token="b", limit=5, limits=limits) == []
    job = await backend.get_job(ids[1])
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
