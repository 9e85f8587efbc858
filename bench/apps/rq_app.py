"""rq: worker side. Jobs are enqueued by dotted path, so this module only holds the body."""

from __future__ import annotations

from bench import probe


def noop(n: int) -> None:
    probe.run_sync(n)
