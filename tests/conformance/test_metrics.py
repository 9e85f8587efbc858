"""Prometheus metrics on every backend: the web app's ``/metrics`` (the store's gauges and
this process's counters and histograms) and a worker's own ``--metrics-port``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock, drain
from conveyor.web import Principal, create_app
from tests.conftest import Store, wait_for

TOKENS = {
    "Bearer acme": Principal(tenant="acme"),
    "Bearer admin": Principal(admin=True),
}
ACME = {"Authorization": "Bearer acme"}
ADMIN = {"Authorization": "Bearer admin"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def authenticate(request: Any) -> Principal | None:
    return TOKENS.get(request.headers.get("authorization", ""))


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def parse(text: str) -> Samples:
    """Every sample of an exposition, read by prometheus-client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Samples:
    r = await client.get("/metrics", headers=ADMIN if headers is None else headers)
    assert r.status_code == 200, r.text
    return parse(r.text)


# -- counters and histograms of this process ------------------------------------------------
async def test_counters_count_what_this_process_enqueues_and_runs(queue: conveyor.Queue) -> None:
    @queue.job("ok", channel="emails")
    async def ok(payload: Any, ctx: conveyor.Context) -> None:
        return None

    @queue.job("boom", attempts=2, backoff=conveyor.Backoff.fixed(0))
    async def boom(payload: Any, ctx: conveyor.Context) -> None:
        raise RuntimeError("kaput")

    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        before = await scrape(client)
        assert not [key for key in before if key[0].startswith("conveyor_jobs_")]
        for _ in range(2):
            await queue.enqueue("ok")
        await queue.enqueue("boom", tenant="acme")
        assert await drain(queue) == 4  # two ok, boom twice
        after = await scrape(client)

    def counter(kind: str, name: str, channel: str) -> float | None:
        return value(after, f"conveyor_jobs_{kind}_total", name=name, channel=channel)

    # The channel label is the job definition's channel.
    assert counter("enqueued", "ok", "emails") == 2
    assert counter("completed", "ok", "emails") == 2
    assert counter("enqueued", "boom", "default") == 1
    assert counter("retried", "boom", "default") == 1
    assert counter("failed", "boom", "default") == 1
    assert counter("completed", "boom", "default") is None
    assert counter("failed", "ok", "emails") is None
    # Every run ended here: one duration per run.
    assert value(after, "conveyor_job_duration_seconds_count", name="ok") == 2
    assert value(after, "conveyor_job_duration_seconds_count", name="boom") == 2


async def test_a_name_without_a_definition_counts_under_the_default_channel(
    store: Store,
) -> None:
    web = store.queue()  # an enqueue-only process: no job definitions of its own
    async with client_for(create_app(web, authenticate=authenticate)) as client:
        await web.enqueue("report", channel="reports")
        samples = await scrape(client)
    assert value(samples, "conveyor_jobs_enqueued_total", name="report", channel="default") == 1


async def test_histograms_measure_run_time_and_queue_wait(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("slow")
    async def slow(payload: Any, ctx: conveyor.Context) -> None:
        clock.advance(2)  # the run takes 2 s on the queue's clock

    async with client_for(create_app(cq, authenticate=authenticate)) as client:
        await cq.enqueue("slow")
        clock.advance(5)  # due for 5 s before a worker takes it
        assert await drain(cq) == 1

        # The queue wait is read from the store after the start, off the job's path.
        async def waited() -> Samples | None:
            samples = await scrape(client)
            count = value(samples, "conveyor_job_queue_wait_seconds_count", name="slow")
            return samples if count == 1 else None

        samples = await wait_for(waited)

    def hist(metric: str, suffix: str, /, **labels: str) -> float | None:
        return value(samples, f"conveyor_job_{metric}_seconds_{suffix}", name="slow", **labels)

    assert hist("queue_wait", "sum") == pytest.approx(5.0, abs=1e-3)
    assert hist("queue_wait", "bucket", le="2.5") == 0
    assert hist("queue_wait", "bucket", le="5.0") == 1
    assert hist("duration", "count") == 1
    assert hist("duration", "sum") == pytest.approx(2.0, abs=1e-3)
    assert hist("duration", "bucket", le="1.0") == 0
    assert hist("duration", "bucket", le="2.5") == 1
    assert hist("duration", "bucket", le="+Inf") == 1


async def test_each_queue_counts_on_its_own_registry(store: Store) -> None:
    one, two = store.queue(), store.queue()
    first = create_app(one, authenticate=authenticate)
    again = create_app(one, authenticate=authenticate)  # a second app on the same queue
    other = create_app(two, authenticate=authenticate)
    await one.enqueue("report")
    async with client_for(first) as a, client_for(again) as b, client_for(other) as c:
        name = "conveyor_jobs_enqueued_total"
        labels = {"name": "report", "channel": "default"}
        assert value(await scrape(a), name, **labels) == 1
        assert value(await scrape(b), name, **labels) == 1  # the same process, counted once
        assert value(await scrape(c), name, **labels) is None  # another queue's counters
    # Nothing lands on prometheus-client's global registry.
    text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "conveyor_" not in text


# -- gauges read from the store --------------------------------------------------------------
async def test_gauges_match_the_store(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("done-job", channel="alpha")
    async def done_job(payload: Any, ctx: conveyor.Context) -> None:
        return None

    await cq.enqueue("done-job")
    assert await drain(cq) == 1
    for _ in range(2):
        await cq.enqueue("done-job")  # queued on alpha
    clock.advance(30)
    await cq.enqueue("done-job", channel="beta")
    await cq.enqueue("done-job", channel="beta", delay=3600)  # scheduled
    await cq.enqueue("done-job", channel="gamma", delay=60)  # nothing due on gamma
    clock.advance(10)

    async with client_for(create_app(cq, authenticate=authenticate)) as client:
        samples = await scrape(client)
    assert value(samples, "conveyor_up") == 1
    totals = await cq.counts()
    for state in JobState:
        assert value(samples, "conveyor_jobs", state=state.value) == totals[state.value], state
    for channel in ("alpha", "beta", "gamma"):
        counts = await cq.counts(channel=channel)
        for state in JobState:
            got = value(samples, "conveyor_channel_jobs", channel=channel, state=state.value)
            assert got == counts[state.value], (channel, state)
    assert value(samples, "conveyor_channel_jobs", channel="alpha", state="completed") == 1
    age = "conveyor_oldest_queued_age_seconds"
    assert value(samples, age, channel="alpha") == pytest.approx(40, abs=1e-3)
    assert value(samples, age, channel="beta") == pytest.approx(10, abs=1e-3)
    assert value(samples, age, channel="gamma") == 0
    assert value(samples, "conveyor_workers") == 0


async def test_worker_gauges_read_the_registry(cq: conveyor.Queue, clock: ManualClock) -> None:
    from conveyor.backends.base import WorkerRecord

    backend = await cq.engine.ready()
    now = clock.now()
    for worker_id, running, slots in (("w1", (1, 2), 10), ("w2", (), 5)):
        await backend.register_worker(
            WorkerRecord(worker_id, "h", 1, None, slots, running, now, now, now + 30)
        )
    async with client_for(create_app(cq, authenticate=authenticate)) as client:
        samples = await scrape(client)
    assert value(samples, "conveyor_workers") == 2
    assert value(samples, "conveyor_worker_slots", state="busy") == 2
    assert value(samples, "conveyor_worker_slots", state="total") == 15


# -- who may read them ----------------------------------------------------------------------
async def test_metrics_need_an_admin_unless_public(queue: conveyor.Queue) -> None:
    await queue.enqueue("report")
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        r = await client.get("/metrics")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await client.get("/metrics", headers=ACME)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await client.get("/metrics", headers=ADMIN)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert r.headers["cache-control"] == "no-store"
    public = create_app(queue, authenticate=authenticate, metrics_public=True)
    async with client_for(public) as client:
        samples = await scrape(client, headers={})
        assert value(samples, "conveyor_jobs", state="queued") == 1


async def test_openmetrics_when_the_scraper_asks_for_it(queue: conveyor.Queue) -> None:
    app = create_app(queue, authenticate=authenticate)  # counting starts here
    await queue.enqueue("report")
    async with client_for(app) as client:
        accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        r = await client.get("/metrics", headers={**ADMIN, "Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert 'conveyor_jobs_enqueued_total{channel="default",name="report"} 1.0' in r.text


# -- a worker's own metrics port ------------------------------------------------------------
WORKER_APP = """
import conveyor

queue = conveyor.Queue()


@queue.job("ping", channel="pings")
async def ping(payload, ctx):
    return "pong"
"""


WORKER_CMD = (sys.executable, "-m", "conveyor", "worker", "metricsapp:queue")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    (tmp_path / "metricsapp.py").write_text(WORKER_APP)
    return tmp_path


@pytest.fixture
def worker_process(store: Store, worker_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [*WORKER_CMD, "--metrics-port", str(port)],
        cwd=worker_dir,
        env=_env(**store.env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            assert proc.stderr is not None
            proc.stderr.close()


async def test_a_worker_serves_its_own_counters_and_histograms(
    store: Store, worker_process: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = worker_process
    web = store.queue()
    job_id = await web.enqueue("ping")

    async def scraped() -> Samples | None:
        try:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{port}/metrics")
        except httpx.TransportError:
            return None  # not listening yet
        samples = parse(r.text)
        ran = value(samples, "conveyor_jobs_completed_total", name="ping", channel="pings")
        waited = value(samples, "conveyor_job_queue_wait_seconds_count", name="ping")
        return samples if ran == 1 and waited == 1 else None

    samples = await wait_for(scraped, 30, interval=0.1)
    job = await web.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED
    assert value(samples, "conveyor_job_duration_seconds_count", name="ping") == 1
    # The store's gauges are the web app's to serve, not every worker's.
    assert not [key for key in samples if key[0] in ("conveyor_up", "conveyor_jobs")]
    assert any(name.startswith("process_") for name, _ in samples)  # this process's own
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in err


def test_a_metrics_port_in_use_exits_1(tmp_path: Path, worker_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*WORKER_CMD, "--metrics-port", str(port)],
            cwd=worker_dir,
            env=_env(CONVEYOR_URL=f"sqlite:///{tmp_path / 'jobs.db'}"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
