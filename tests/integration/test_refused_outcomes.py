"""An outcome the store refuses is isolated, never retried forever (SQLite, PostgreSQL).

Both SQL stores check the JSON they are given (SQLite's json(), PostgreSQL's jsonb) and
refuse a malformed error record as data, not as an outage. The completer then writes the
batch outcome by outcome: the good ones land, and the refused job fails with
``OutcomeNotStored`` saying why. (Redis stores error records as opaque text, so it has
nothing to refuse here; its refusals — script errors — take the same path.)
"""

from __future__ import annotations

import asyncio
import json

import pytest

import conveyor
from conveyor import JobState
from conveyor.backends.base import ClaimParams, Outcome
from conveyor.worker.completer import Completer

SQL_STORES = pytest.mark.parametrize("backend_name", ["sqlite", "postgres"], indirect=True)


@SQL_STORES
async def test_a_refused_outcome_fails_alone_and_the_rest_of_its_batch_lands(store) -> None:  # type: ignore[no-untyped-def]
    queue = store.queue()
    ids = await queue.enqueue_many([conveyor.JobSpec("job", {"n": n}) for n in range(3)])
    backend = await queue.engine.ready()
    now = queue.clock.now()
    claimed = await backend.claim(
        ClaimParams(worker_id="w", token="tok", limit=3, now=now, lease_expires_at=now + 60)
    )
    assert sorted(j.id for j in claimed) == ids
    completer = Completer(backend)
    runner = asyncio.create_task(completer.run())
    recorded: dict[int, tuple[str, bool]] = {}

    def done(outcome: Outcome, applied: bool) -> None:
        recorded[outcome.job_id] = (outcome.event, applied)

    good_a, bad, good_b = ids
    for job_id in (good_a, good_b):
        outcome = Outcome(job_id, "tok", JobState.COMPLETED, now, "completed", result="1")
        completer.submit(outcome, [], done)
    refused = Outcome(bad, "tok", JobState.FAILED, now, "failed", error="{not json", attempt=1)
    completer.submit(refused, [], done)
    await asyncio.wait_for(completer.drain(), 10)  # never retried forever
    completer.stop()
    await asyncio.wait_for(runner, 10)

    assert recorded == {
        good_a: ("completed", True),
        good_b: ("completed", True),
        bad: ("failed", True),
    }
    for job_id in (good_a, good_b):
        job = await queue.get_job(job_id)
        assert job is not None and job.state is JobState.COMPLETED and job.result == 1
    job = await queue.get_job(bad)
    assert job is not None and job.state is JobState.FAILED
    assert job.last_error is not None and job.last_error["type"] == "OutcomeNotStored"
    assert "failed outcome" in job.last_error["message"]
    json.dumps(job.errors)  # readable, every record whole
