"""Child-process entry points (spawned: each runs its own event loop and backend)."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.backends.base import EnqueueParams
from tests.integration.postgres.helpers import NOW, make_backend, new_job


def migrate(schema: str, barrier: Any, results: Any) -> None:
    """Wait for the others, then migrate ``schema``; report "ok" or the error."""

    async def main() -> None:
        backend = make_backend(schema)
        await backend.connect()
        try:
            barrier.wait(30)
            await backend.migrate()
        finally:
            await backend.close()

    try:
        asyncio.run(main())
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def enqueue_keys(schema: str, keys: list[str], batch: bool, barrier: Any, results: Any) -> None:
    """Enqueue one job per key (one by one, or as one batch) right after the barrier;
    report ``[(key, id, created), …]``."""

    async def main() -> list[tuple[str, int, bool]]:
        backend = make_backend(schema)
        await backend.connect()
        try:
            barrier.wait(30)
            out: list[tuple[str, int, bool]] = []
            if batch:
                jobs = [new_job(idempotency_key=k) for k in keys]
                res = await backend.enqueue_many(EnqueueParams(jobs, NOW))
                out.extend((k, r.id, r.created) for k, r in zip(keys, res, strict=True))
            else:
                for k in keys:
                    [r] = await backend.enqueue_many(
                        EnqueueParams([new_job(idempotency_key=k)], NOW)
                    )
                    out.append((k, r.id, r.created))
            return out
        finally:
            await backend.close()

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
