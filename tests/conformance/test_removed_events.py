"""``removed`` events for jobs that clean() and retention delete (in-process, ``queue.on``):
one per job, naming it, with the reason."""

from __future__ import annotations

from datetime import timedelta

import conveyor
from conveyor.testing import ManualClock
from tests.conformance._util import Events


def _jobs(q: conveyor.Queue) -> tuple[conveyor.JobDefinition, conveyor.JobDefinition]:
    @q.job("ok")
    async def ok(payload: object, ctx: conveyor.Context) -> None:
        return None

    @q.job("bad")
    async def bad(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    return ok, bad


def _removed(events: Events) -> dict[int, tuple[str, str | None, int, dict[str, object]]]:
    return {e.job_id: (e.job_name, e.tenant, e.attempt, dict(e.data)) for e in events.of("removed")}


async def test_clean_emits_removed_per_job(cq: conveyor.Queue, clock: ManualClock) -> None:
    ok, bad = _jobs(cq)
    done = [await ok.enqueue(tenant=t) for t in ("acme", None, "globex")]
    failed = await bad.enqueue()
    await cq.worker().run_once()
    events = Events(cq)
    clock.advance(60)
    assert await cq.clean(older_than=timedelta(seconds=30)) == 3
    clean = {"reason": "clean"}
    assert _removed(events) == {
        done[0]: ("ok", "acme", 1, clean),
        done[1]: ("ok", None, 1, clean),
        done[2]: ("ok", "globex", 1, clean),
    }
    assert await cq.clean(older_than=0, state="failed") == 1
    assert _removed(events)[failed] == ("bad", None, 1, clean)
    assert len(events.of("removed")) == 4
    assert await cq.clean(older_than=0) == 0  # nothing left: no more events
    assert len(events.of("removed")) == 4


async def test_a_retention_pass_emits_removed(store, clock: ManualClock) -> None:
    q = store.queue(clock=clock, keep_completed=timedelta(minutes=1), keep_failed=None)
    await q.migrate()
    ok, bad = _jobs(q)
    done = await ok.enqueue(tenant="acme")
    failed = await bad.enqueue()
    await q.worker().run_once()
    events = Events(q)
    clock.advance(61)
    await q.run_maintenance()
    assert await q.get_job(done) is None
    assert _removed(events) == {done: ("ok", "acme", 1, {"reason": "retention"})}
    assert await q.get_job(failed) is not None  # keep_failed=None: kept, no event
