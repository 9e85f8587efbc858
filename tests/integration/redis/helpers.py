"""Builders and helpers shared by the Redis backend tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor.backends.base import (
    ClaimParams,
    EnqueueParams,
    NewJob,
    Outcome,
    ProgressUpdate,
    PromoteParams,
    PruneParams,
)
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.keys import Keys, scan_pattern
from conveyor.models import JobState
from tests.integration.jobs import NOW, new_job


def claim_params(token: str = "tok", limit: int = 10, now: float = NOW, **kw: Any) -> ClaimParams:
    return ClaimParams(
        worker_id="w1", token=token, limit=limit, now=now, lease_expires_at=now + 30, **kw
    )


async def enqueue(backend: RedisBackend, *jobs: NewJob, now: float = NOW) -> list[int]:
    results = await backend.enqueue_many(EnqueueParams(jobs=list(jobs), now=now))
    return [r.id for r in results]


def done(
    job_id: int, token: str = "tok", state: JobState = JobState.COMPLETED, **kw: Any
) -> Outcome:
    return Outcome(job_id=job_id, token=token, state=state, at=NOW + 1, event=str(state), **kw)


async def claim_ids(backend: RedisBackend, **kw: Any) -> list[int]:
    return [j.id for j in await backend.claim(claim_params(**kw))]


def progress(job_id: int, token: str, value: int, now: float = NOW) -> ProgressUpdate:
    return ProgressUpdate(job_id=job_id, token=token, progress=value, now=now)


def promote(now: float, horizon: float = 0.0, limit: int = 100) -> PromoteParams:
    return PromoteParams(now=now, horizon=horizon, limit=limit)


def prune(state: JobState, finished_before: float, limit: int = 100) -> PruneParams:
    return PruneParams(state=state, finished_before=finished_before, limit=limit)


class Raw:
    """Direct reads of the queue's keys."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.keys = Keys(prefix)

    def registered(self, backend: RedisBackend) -> bool:
        return bool(self.client.hexists(self.keys.waiters, hand_id(backend)))

    def job(self, job_id: int) -> dict[str, str]:
        return dict(self.client.hgetall(self.keys.job(job_id)))

    def state(self, job_id: int) -> str:
        return self.job(job_id)["state"]

    def markers(self) -> int:
        return int(self.client.zcard(self.keys.marker))


def hand_id(backend: RedisBackend) -> str:
    hand = backend._waker._hand  # type: ignore[union-attr]
    assert hand is not None
    return hand.id


def delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=scan_pattern(prefix), count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A private redis-server (no persistence) that a test may stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server must be installed in CI for the restart tests")
            pytest.skip("SKIPPING: redis-server is not installed")
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as c:
                    c.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


def _settings(url: str, prefix: str) -> Any:
    from conveyor.settings import Settings

    return Settings(url=url, prefix=prefix)


def enqueue_same_key_process(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """Child process: wait for every sibling, then enqueue with one idempotency key."""

    async def run() -> list[tuple[int, bool]]:
        backend = RedisBackend(_settings(url, prefix))
        await backend.connect()
        try:
            barrier.wait(30)
            out = []
            for _ in range(20):
                [r] = await backend.enqueue_many(
                    EnqueueParams([new_job(idempotency_key="same")], NOW)
                )
                out.append((r.id, r.created))
            return out
        finally:
            await backend.close()

    results.put(asyncio.run(run()))


def claim_all_process(url: str, prefix: str, barrier: Any, results: Any, token: str) -> None:
    """Child process: claim in small batches until the queue is empty; report the ids."""

    async def run() -> list[int]:
        backend = RedisBackend(_settings(url, prefix))
        await backend.connect()
        try:
            barrier.wait(30)
            got: list[int] = []
            while True:
                jobs = await backend.claim(claim_params(token=token, limit=5))
                if not jobs:
                    return got
                got += [j.id for j in jobs]
        finally:
            await backend.close()

    results.put(asyncio.run(run()))
