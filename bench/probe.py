"""Completion observed from outside the system under test.

Job side: :func:`record` appends ``"<n> <t_start> <t_end>\\n"`` to the file named by
``BENCH_PROBE`` with one unbuffered ``O_APPEND`` ``os.write`` (atomic for such short lines),
so it works the same for async, threaded, multi-process and fork-per-job workers and adds
no broker round trip to the job.

Driver side: :class:`ProbeReader` tails that file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ENV_PATH = "BENCH_PROBE"
ENV_SLEEP_MS = "BENCH_SLEEP_MS"

_fd: int | None = None


def _probe_fd() -> int:
    global _fd
    # A forked child inherits the fd; O_APPEND keeps its writes whole, so it can share it.
    if _fd is None:
        _fd = os.open(os.environ[ENV_PATH], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


def sleep_seconds() -> float:
    """How long each job body sleeps (scenario D), from ``BENCH_SLEEP_MS``."""
    return int(os.environ.get(ENV_SLEEP_MS, "0")) / 1000.0


def record(n: int, t_start: float) -> None:
    """Called by every job body at its end with its own start time."""
    os.write(_probe_fd(), f"{n} {t_start:.6f} {time.time():.6f}\n".encode())


def run_sync(n: int) -> None:
    """The whole body of a sync job: optional sleep, then record."""
    t0 = time.time()
    delay = sleep_seconds()
    if delay:
        time.sleep(delay)
    record(n, t0)


async def run_async(n: int) -> None:
    """The whole body of an async job: optional sleep, then record."""
    t0 = time.time()
    delay = sleep_seconds()
    if delay:
        await asyncio.sleep(delay)
    record(n, t0)


class DrainTimeout(Exception):
    """The expected jobs did not all complete before the deadline (or progress stalled)."""


@dataclass
class ProbeReader:
    path: Path
    starts: dict[int, float] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    _offset: int = 0
    _partial: bytes = b""

    def poll(self) -> int:
        """Read what was appended since the last call; returns how many new lines."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            n_s, start_s, end_s = line.split()
            n = int(n_s)
            if n in self.starts:
                self.duplicates += 1
                continue
            self.starts[n] = float(start_s)
            self.ends[n] = float(end_s)
        return len(lines)

    async def wait_for(
        self,
        expected: Iterable[int],
        *,
        timeout: float,
        stall_timeout: float = 60.0,
        alive: Callable[[], bool] = lambda: True,
        on_first: Callable[[], None] | None = None,
        interval: float = 0.005,
    ) -> None:
        """Poll until every ``expected`` id has completed.

        Raises DrainTimeout after ``timeout`` seconds, after ``stall_timeout`` seconds with
        no new completion, or when ``alive()`` says the workers are gone.
        """
        remaining = set(expected)
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        first_seen = False
        while True:
            if self.poll():
                last_progress = time.monotonic()
                if not first_seen and on_first is not None:
                    on_first()
                first_seen = True
            remaining.difference_update(self.starts.keys() & remaining)
            if not remaining:
                return
            now = time.monotonic()
            done = len(self.starts)
            if now > deadline:
                raise DrainTimeout(f"timeout: {done} done, {len(remaining)} still expected")
            if now - last_progress > stall_timeout:
                raise DrainTimeout(f"stalled {stall_timeout:.0f}s: {len(remaining)} left")
            if not alive():
                self.poll()
                remaining.difference_update(self.starts.keys() & remaining)
                if not remaining:
                    return
                raise DrainTimeout(f"workers exited: {len(remaining)} jobs left")
            await asyncio.sleep(interval)

    def window(self, ids: Iterable[int]) -> tuple[float, float]:
        """(first start, last end) over ``ids``."""
        ids = list(ids)
        return min(self.starts[i] for i in ids), max(self.ends[i] for i in ids)
