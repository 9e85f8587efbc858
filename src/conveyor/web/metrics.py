"""Prometheus metrics through ``prometheus-client``, on registries of our own (never the
global ``REGISTRY``, so several apps, queues and tests never collide).

Two kinds, counted in different places:

- :class:`JobMetrics`: counters and histograms of the jobs *this process* enqueues and
  runs, counted from the queue's in-process events (``queue.on``). One per
  :class:`conveyor.Queue` object (:func:`job_metrics`), shared by every app built on it
  and by the worker's own metrics server (``conveyor worker --metrics-port``).
- :class:`StoreCollector`: gauges read from the store at scrape time (jobs per state and
  channel, the oldest queued job's age, workers and their slots). The same for every process, so only the web
  app's ``/metrics`` serves them, never a worker's port (N workers would repeat them).

The channel label is the registered job definition's channel (``"default"`` for a name
this process has no definition of); an enqueue that overrides ``channel=`` is counted
under the definition's. The queue wait (``run_at`` to start) comes with the ``started``
event of this process's workers (its data holds ``channel`` and ``run_at``); for a
``started`` event without it, it is read from the job right after it starts, off the
job's path, by one task per process (skipped when it falls behind).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from conveyor.errors import BackendError
from conveyor.models import Event, Job, JobState

if TYPE_CHECKING:
    from datetime import datetime
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from conveyor.queue import Queue

__all__ = [
    "DURATION_BUCKETS",
    "QUEUE_WAIT_BUCKETS",
    "AppMetrics",
    "JobMetrics",
    "MetricsServer",
    "StoreCollector",
    "StoreSnapshot",
    "job_metrics",
    "read_store",
]

log = logging.getLogger("conveyor")

#: Seconds: from 5 ms to an hour (a job's run time).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
#: Seconds: from 10 ms to a day (how long a due job waited for a worker).
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                      300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0)  # fmt: skip
#: Runs started in this process whose outcome has not come yet: at most this many are
#: remembered (the oldest are forgotten first: their duration is not observed).
MAX_TRACKED = 100_000
#: Started jobs waiting to have their queue wait read; past this, starts are skipped.
MAX_PENDING_WAITS = 10_000
#: The most jobs (and ids) one read for queue waits covers.
READ_WINDOW = 64


class JobMetrics:
    """Counters and histograms of the jobs this process enqueues and runs (a
    prometheus-client collector; register it on your own registry to export it).

    - ``conveyor_jobs_enqueued_total{name,channel}``: ``enqueued`` events (enqueues and
      cron firings in this process).
    - ``conveyor_jobs_completed_total{name,channel}``: runs that completed here.
    - ``conveyor_jobs_failed_total{name,channel}``: jobs that failed for good here (out
      of attempts, ``Fatal``, no handler, a final stall rescued by this process).
    - ``conveyor_jobs_retried_total{name,channel}``: failed attempts with another to come
      (a draining worker's requeue is not a retry).
    - ``conveyor_job_duration_seconds{name}``: run time, start to outcome, of the runs
      that ended here (completed, failed, retried, cancelled).
    - ``conveyor_job_queue_wait_seconds{name}``: from ``run_at`` (due) to started.

    Use :func:`job_metrics` rather than this constructor: one per queue.

    Args:
        queue: the queue whose in-process events are counted (held weakly).
    """

    def __init__(self, queue: Queue) -> None:
        self._queue = weakref.ref(queue)
        labels = ("name", "channel")
        self.enqueued = Counter(
            "conveyor_jobs_enqueued", "Jobs enqueued by this process.", labels, registry=None
        )
        self.completed = Counter(
            "conveyor_jobs_completed", "Jobs completed by this process.", labels, registry=None
        )
        self.failed = Counter(
            "conveyor_jobs_failed",
            "Jobs that failed for good in this process (no retry left).",
            labels,
            registry=None,
        )
        self.retried = Counter(
            "conveyor_jobs_retried",
            "Failed attempts that this process scheduled another attempt for.",
            labels,
            registry=None,
        )
        self.duration = Histogram(
            "conveyor_job_duration_seconds",
            "Run time of the job attempts that ended in this process, start to outcome.",
            ("name",),
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.queue_wait = Histogram(
            "conveyor_job_queue_wait_seconds",
            "How long a due job waited for this process's workers: run_at to started.",
            ("name",),
            buckets=QUEUE_WAIT_BUCKETS,
            registry=None,
        )
        self._metrics = (
            self.enqueued,
            self.completed,
            self.failed,
            self.retried,
            self.duration,
            self.queue_wait,
        )
        self._counters = {
            "enqueued": self.enqueued,
            "completed": self.completed,
            "failed": self.failed,
            "orphaned": self.failed,
            "retrying": self.retried,
        }
        self._children: dict[tuple[str, str], Any] = {}  # (event type, name) -> labelled
        self._durations: dict[str, Any] = {}  # name -> labelled
        self._starts: dict[int, datetime] = {}  # job id -> its running attempt's start
        self._waits: collections.deque[tuple[int, str, int]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        for type_ in ("enqueued", "started", "completed", "failed", "orphaned", "retrying",
                      "cancelled", "stalled"):  # fmt: skip
            queue.on(type_, self._on_event)

    # -- prometheus-client's collector protocol ----------------------------------------------
    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield from metric.collect()

    def describe(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield from metric.describe()

    # -- counting ------------------------------------------------------------------------------
    def _channel(self, name: str) -> str:
        queue = self._queue()
        definition = queue.definitions.get(name) if queue is not None else None
        return definition.channel if definition is not None else "default"

    def _count(self, kind: str, name: str) -> None:
        child = self._children.get((kind, name))
        if child is None:  # first time: resolve the labels once
            counter = self._counters[kind]
            child = self._children[(kind, name)] = counter.labels(name, self._channel(name))
        child.inc()

    def _on_event(self, event: Event) -> None:
        """Sync and cheap: it runs inline, on the job's path."""
        kind = event.type
        if kind == "enqueued":
            self._count(kind, event.job_name)
        elif kind == "started":
            self._started(event)
        elif kind == "stalled" or (kind == "retrying" and "error" not in event.data):
            # A dead worker's run (no run time to tell), or a draining worker's requeue
            # (not a retry).
            self._starts.pop(event.job_id, None)
        else:
            if kind != "cancelled":
                self._count(kind, event.job_name)
            started = self._starts.pop(event.job_id, None)
            if started is not None:
                name = event.job_name
                child = self._durations.get(name)
                if child is None:
                    child = self._durations[name] = self.duration.labels(name)
                child.observe(max(0.0, (event.at - started).total_seconds()))

    def _started(self, event: Event) -> None:
        starts = self._starts
        starts.pop(event.job_id, None)  # re-inserted last: the dict stays oldest first
        starts[event.job_id] = event.at
        if len(starts) > MAX_TRACKED:
            del starts[next(iter(starts))]
        run_at = event.data.get("run_at")
        if isinstance(run_at, float):  # a worker of this process: no read needed
            wait = event.at.timestamp() - run_at
            if wait >= 0:
                self.queue_wait.labels(event.job_name).observe(wait)
            return
        if len(self._waits) >= MAX_PENDING_WAITS:
            return
        self._waits.append((event.job_id, event.job_name, event.attempt))
        if self._reader is None or self._reader.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - workers emit `started` on their loop
                return
            self._reader = loop.create_task(self._read_waits(), name="conveyor-metrics-wait")

    async def _read_waits(self) -> None:
        """Observe each started job's queue wait, ``started_at - run_at``, read from the
        store while the job is still in the run that started (else it is skipped).

        Jobs start in runs of nearby ids, so they are read by id window: one
        ``list_jobs(before_id=hi + 1, limit=hi - lo + 1)`` answers every job of
        ``lo..hi`` (rows as lists have them: no steps, tokens or logs loaded).
        """
        while self._waits:
            ids: dict[int, tuple[str, int]] = {}
            while self._waits and len(ids) < READ_WINDOW:
                job_id, name, attempt = self._waits.popleft()
                ids[job_id] = (name, attempt)
            queue = self._queue()
            if queue is None:
                self._waits.clear()
                return
            try:
                jobs = await _read_ids(queue, sorted(ids))
            except Exception as exc:  # the store went away, or the queue was closed
                log.debug("metrics: queue waits not read (%d jobs): %s", len(ids), exc)
                self._waits.clear()
                return
            finally:
                del queue
            for job in jobs:
                name, attempt = ids[job.id]
                if job.attempts != attempt or job.started_at is None:
                    continue  # claimed again since
                wait = (job.started_at - job.run_at).total_seconds()
                if wait >= 0:  # negative: run_at moved on (a retry was scheduled)
                    self.queue_wait.labels(name).observe(wait)

    async def flush(self) -> None:
        """Wait until the queue waits of the jobs started so far are observed (the
        worker CLI calls this before it closes the queue)."""
        reader = self._reader
        if (
            reader is not None
            and not reader.done()
            and reader.get_loop() is asyncio.get_running_loop()
        ):
            await asyncio.shield(reader)


async def _read_ids(queue: Queue, ids: list[int]) -> list[Job]:
    """The jobs of ``ids`` (sorted) that still exist, one read per window of ids."""
    found: list[Job] = []
    i = 0
    while i < len(ids):
        lo = ids[i]
        j = i
        while j + 1 < len(ids) and ids[j + 1] - lo < READ_WINDOW:
            j += 1
        hi = ids[j]
        wanted = set(ids[i : j + 1])
        rows = await queue.list_jobs(before_id=hi + 1, limit=hi - lo + 1)
        found += [job for job in rows if job.id in wanted]
        i = j + 1
    return found


_JOB_METRICS: weakref.WeakKeyDictionary[Queue, JobMetrics] = weakref.WeakKeyDictionary()


def job_metrics(queue: Queue) -> JobMetrics:
    """The :class:`JobMetrics` of ``queue`` in this process (created, and subscribed to its
    events, on first use; it lives as long as the queue)."""
    found = _JOB_METRICS.get(queue)
    if found is None:
        found = _JOB_METRICS[queue] = JobMetrics(queue)
    return found


# -- gauges read from the store ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What one scrape read from the store.

    Args:
        counts: jobs per state value, over every channel.
        channels: per channel: its name, jobs per state value, and the age in seconds of
            its oldest due (queued) job, or None when none is queued.
    """

    counts: Mapping[str, int]
    channels: Sequence[tuple[str, Mapping[str, int], float | None]]
    workers: int = 0  # live workers in the registry
    slots: tuple[int, int] = (0, 0)  # (busy, total) over those workers


async def read_store(queue: Queue) -> StoreSnapshot | None:
    """The store's numbers for one scrape, or None when the store does not answer."""
    try:
        counts = await queue.counts()
        stats = await queue.channels()
        workers = await queue.workers()
    except BackendError as exc:
        log.warning("metrics: the job store did not answer: %s", exc)
        return None
    now = queue.clock.now()
    channels = [
        (
            c.name,
            c.counts,
            None if c.oldest_queued_at is None else max(0.0, now - c.oldest_queued_at.timestamp()),
        )
        for c in stats
        if sum(c.counts.values())  # a channel with only a pause or limits has no jobs
    ]
    busy = sum(len(w.running) for w in workers)
    total = sum(w.concurrency for w in workers)
    return StoreSnapshot(counts, channels, len(workers), (busy, total))


_UNREAD: Any = object()


class StoreCollector:
    """The store's gauges, from the snapshot of the scrape being answered (a collector's
    ``collect()`` is synchronous, so the reads happen before it, in :class:`AppMetrics`).

    - ``conveyor_up``: 1 when the store answered this scrape, else 0 (and nothing else).
    - ``conveyor_jobs{state}``: jobs per state, every state (zero included).
    - ``conveyor_channel_jobs{channel,state}``: the same per channel.
    - ``conveyor_oldest_queued_age_seconds{channel}``: how long the channel's oldest due
      job has been due (0 when none is queued).
    - ``conveyor_workers``: workers in the registry; ``conveyor_worker_slots{state}``:
      their slots, ``busy`` and ``total``.
    """

    def __init__(self) -> None:
        self.snapshot: StoreSnapshot | None = _UNREAD

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "conveyor_up", "Whether the job store answered this scrape (1) or not (0)."
            ),
            GaugeMetricFamily("conveyor_jobs", "Jobs in the store, per state.", labels=["state"]),
            GaugeMetricFamily(
                "conveyor_channel_jobs",
                "Jobs in the store, per channel and state.",
                labels=["channel", "state"],
            ),
            GaugeMetricFamily(
                "conveyor_oldest_queued_age_seconds",
                "Seconds the oldest due (queued) job of the channel has been waiting.",
                labels=["channel"],
            ),
            GaugeMetricFamily("conveyor_workers", "Workers running now (the registry)."),
            GaugeMetricFamily(
                "conveyor_worker_slots",
                "Job slots of the running workers: busy, and in all.",
                labels=["state"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        if snap is _UNREAD:
            return ()
        up, jobs, channel_jobs, oldest, workers, slots = self._families()
        up.add_metric([], 0 if snap is None else 1)
        if snap is None:  # an outage is not zero jobs: report nothing but conveyor_up 0
            return (up,)
        # States come from the enum, never from stored data.
        for state in JobState:
            jobs.add_metric([state.value], int(snap.counts.get(state.value, 0)))
        for channel, counts, age in snap.channels:
            for state in JobState:
                channel_jobs.add_metric([channel, state.value], int(counts.get(state.value, 0)))
            oldest.add_metric([channel], 0.0 if age is None else age)
        workers.add_metric([], snap.workers)
        slots.add_metric(["busy"], snap.slots[0])
        slots.add_metric(["total"], snap.slots[1])
        return (up, jobs, channel_jobs, oldest, workers, slots)


class AppMetrics:
    """What a web app's ``/metrics`` serves: the store's gauges and this process's
    :class:`JobMetrics`, on a registry of the app's own."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.store = StoreCollector()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.store)
        self.registry.register(job_metrics(queue))

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for (the Prometheus text format
        0.0.4 by default, OpenMetrics when asked) and its content type."""
        snapshot = await read_store(self.queue)
        encoder, content_type = choose_encoder(accept or "")
        # Set, encoded and reset without an await in between: scrapes never interleave.
        self.store.snapshot = snapshot
        try:
            return encoder(self.registry), content_type
        finally:
            self.store.snapshot = _UNREAD


class MetricsServer:
    """A worker process's own metrics endpoint: its :class:`JobMetrics` and the
    ``process_*`` metrics of the process (CPU, memory, open files; on Linux), served by
    prometheus-client's HTTP server in a daemon thread on every path.

    Args:
        queue: the queue whose jobs this process runs.
        host: the address to listen on.
        port: the TCP port (0: any free one, see :attr:`port`).

    Raises:
        OSError: the address cannot be listened on (in use, not local).
    """

    def __init__(self, queue: Queue, host: str, port: int) -> None:
        self.metrics = job_metrics(queue)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.metrics)
        ProcessCollector(registry=self.registry)
        server, thread = _start_http_server(port, addr=host, registry=self.registry)
        self._server: WSGIServer = server
        self._thread: Thread = thread

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_port)

    async def close(self) -> None:
        """Observe what is pending, then stop serving."""
        await self.metrics.flush()
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        self._thread.join(timeout=5)
