"""Builders shared by the PostgreSQL backend tests (also imported by child processes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.backends.base import ClaimParams, EnqueueParams, EventRead, NewJob, Outcome
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.models import Event, JobState
from conveyor.settings import Settings
from tests.integration.jobs import NOW as NOW  # re-exported
from tests.integration.jobs import new_job as new_job  # re-exported

PG_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def url_for(app: str, **params: str) -> str:
    """The test server's URL with an application_name (to find our backends' pids)."""
    query = "&".join(f"{k}={v}" for k, v in {"application_name": app, **params}.items())
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}{query}"


def make_backend(schema: str, app: str | None = None, **settings: Any) -> PostgresBackend:
    url = url_for(app or f"{schema}-{uuid.uuid4().hex[:6]}")
    return PostgresBackend(Settings.resolve(url=url, schema=schema, env={}, **settings))


async def enqueue(
    backend: PostgresBackend, *jobs: NewJob, now: float = NOW, **kw: Any
) -> list[int]:
    results = await backend.enqueue_many(EnqueueParams(list(jobs), now, **kw))
    return [r.id for r in results]


async def read_events(
    backend: PostgresBackend, after: str | None, limit: int, timeout: float = 0.0
) -> tuple[list[Event], str]:
    """``backend.read_events`` as (events, cursor)."""
    page = await backend.read_events(EventRead(after, limit, timeout))
    return page.events, page.cursor


def claim_params(token: str = "tok", limit: int = 10, now: float = NOW, **kw: Any) -> ClaimParams:
    return ClaimParams(
        worker_id=kw.pop("worker_id", "w1"),
        token=token,
        limit=limit,
        now=now,
        lease_expires_at=kw.pop("lease_expires_at", now + 30),
        **kw,
    )


def done(
    job_id: int, token: str = "tok", state: JobState = JobState.COMPLETED, **kw: Any
) -> Outcome:
    """An outcome for a claimed job (completed unless told otherwise)."""
    kw.setdefault("at", NOW)
    kw.setdefault("event", state.value)
    return Outcome(job_id=job_id, token=token, state=state, **kw)


async def eventually(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


SPAWN = multiprocessing.get_context("spawn")


def run_children(target: Any, args_list: list[tuple[Any, ...]], timeout: float = 60) -> list[Any]:
    """Start one spawned process per args tuple (a shared barrier is appended), collect
    one result from each."""
    barrier = SPAWN.Barrier(len(args_list))
    results = SPAWN.Queue()
    children = [SPAWN.Process(target=target, args=(*a, barrier, results)) for a in args_list]
    for child in children:
        child.start()
    try:
        return [results.get(timeout=timeout) for _ in children]
    finally:
        for child in children:
            child.join(timeout)
            if child.is_alive():  # pragma: no cover - only when a child hangs
                child.kill()
        results.close()
