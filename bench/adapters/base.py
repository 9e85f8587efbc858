"""The one interface every benchmarked system implements.

A scenario drives an adapter like this (all inside one child process)::

    await adapter.setup(ctx)                  # create the database / schema / app
    await adapter.enqueue_one(n)  ...         # or enqueue_many([n, ...])
    handle = adapter.start_workers(n_processes, concurrency, probe_path, sleep_ms)
    await adapter.wait_until_drained(probe, ids, handle, timeout=...)
    adapter.stop_workers(handle)
    await adapter.reset()                     # an empty queue for the next phase
    await adapter.teardown()                  # drop everything this adapter created

Job bodies append to the probe file (``bench.probe``); the driver never asks the system
under test whether a job ran.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.probe import ENV_PATH, ENV_SLEEP_MS, ProbeReader
from bench.procs import WorkerGroup

ALL_SCENARIOS = frozenset("ABCDE")


@dataclass(frozen=True)
class Context:
    """Where one (system, rep, scenario) cell keeps its files."""

    workdir: Path
    rep: int


@dataclass
class DrainTiming:
    """Set by adapters that time a drain themselves (limit-postgres through pgbench)."""

    jobs: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(abc.ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # "sqlite" | "postgres" | "redis": the conveyor it is compared with
    scenarios: ClassVar[frozenset[str]] = frozenset("ABCD")
    has_bulk: ClassVar[bool] = False
    bulk_api: ClassVar[str] = ""  # what enqueue_many calls, for the report
    sync_jobs: ClassVar[bool] = False  # D: the job sleeps with time.sleep on a thread/process
    config: ClassVar[str] = ""  # one line for the report: how the worker runs

    def __init__(self) -> None:
        self.ctx: Context | None = None

    @property
    def workdir(self) -> Path:
        assert self.ctx is not None, "setup() first"
        return self.ctx.workdir

    # -- lifecycle --------------------------------------------------------------------
    @abc.abstractmethod
    async def setup(self, ctx: Context) -> None:
        """Create storage and the producer client; the queue is empty afterwards."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Empty the queue (and any finished-job history) for the next phase."""

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Close clients and drop everything setup() created."""

    # -- producing ----------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue_one(self, n: int) -> None:
        """Enqueue one no-op job with payload ``{"n": n}`` through the normal client API."""

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        """Enqueue a chunk in one bulk call. Only when ``has_bulk``."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    async def timed_enqueue_one(self, count: int) -> float | None:
        """Seconds for ``count`` one-by-one enqueues timed by a native tool, or None for
        the generic loop over ``enqueue_one`` (only limit-postgres uses pgbench here)."""
        return None

    async def completed_count(self) -> int | None:
        """How many jobs the store itself says completed (after the workers stopped), to
        catch a system that runs job bodies but fails to record them. None: not checked."""
        return None

    async def preload(self, ns: Sequence[int], chunk: int = 1000) -> None:
        """Load jobs before a drain (not timed): bulk when possible."""
        if self.has_bulk:
            for i in range(0, len(ns), chunk):
                await self.enqueue_many(ns[i : i + chunk])
        else:
            for n in ns:
                await self.enqueue_one(n)
        await self.after_preload()

    async def after_preload(self) -> None:  # noqa: B027 - an optional hook
        """Hook after a (not timed) pre-load, e.g. ANALYZE on Postgres."""

    async def preload_finished(self, count: int) -> None:
        """Store ``count`` already-finished jobs (scenario E). Only when E is supported."""
        raise NotImplementedError(f"{self.name} does not support scenario E")

    # -- consuming ----------------------------------------------------------------------
    @abc.abstractmethod
    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        """The CLI command line(s) that start ``n_processes`` worker processes."""

    def worker_env(self) -> dict[str, str]:
        """Environment the worker processes need besides the probe settings."""
        return {}

    def start_workers(
        self, n_processes: int, concurrency: int, probe_path: Path, sleep_ms: int = 0
    ) -> WorkerGroup:
        env = {
            **self.worker_env(),
            ENV_PATH: str(probe_path),
            ENV_SLEEP_MS: str(sleep_ms),
            "BENCH_CONCURRENCY": str(concurrency),  # for apps configured in code (saq, arq)
        }
        log = probe_path.with_suffix(".worker.log")
        return WorkerGroup(self.worker_commands(n_processes, concurrency), env, log).start()

    async def wait_until_drained(
        self,
        probe: ProbeReader,
        ids: Iterable[int],
        handle: WorkerGroup,
        *,
        timeout: float,
        on_first: Any = None,
    ) -> DrainTiming | None:
        """Return once every id has completed. None: timing comes from the probe."""
        await probe.wait_for(ids, timeout=timeout, alive=handle.alive, on_first=on_first)
        return None

    def stop_workers(self, handle: WorkerGroup) -> None:
        handle.stop()
