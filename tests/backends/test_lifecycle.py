"""connect / close / migrate / migration_sql, and the capability flags."""

from __future__ import annotations

import asyncio
import threading

from conveyor.backends.base import Backend
from tests.backends.conftest import Store
from tests.backends.helpers import enqueue, get, new_job


async def test_migrate_is_idempotent_and_keeps_data(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job("kept"))
    await backend.migrate()
    await backend.migrate()
    assert (await get(backend, job_id)).name == "kept"
    [other] = await enqueue(backend, new_job("after"))
    assert other > job_id


async def test_connect_and_close_are_idempotent(backend: Backend, store: Store) -> None:
    """Not stated in base.py (the brief asks for it, and every backend does it): connect
    and close may be repeated, and a closed instance connects again."""
    [job_id] = await enqueue(backend, new_job("kept"))
    other = store.build()
    await other.connect()
    await other.connect()
    assert (await get(other, job_id)).name == "kept"
    await other.close()
    await other.close()
    await other.connect()
    assert (await get(other, job_id)).name == "kept"
    await other.close()


async def test_a_second_instance_migrates_and_sees_the_same_store(
    backend: Backend, store: Store
) -> None:
    [job_id] = await enqueue(backend, new_job("shared"))
    other = store.build()
    await other.connect()
    await other.migrate()  # on a store another instance already migrated
    assert (await get(other, job_id)).name == "shared"
    await other.close()
    # closing one instance does not disturb the other
    assert (await get(backend, job_id)).name == "shared"


async def test_migration_sql_is_text_without_connecting(backend: Backend, store: Store) -> None:
    sql = backend.migration_sql()
    assert isinstance(sql, str)
    fresh = store.build()  # never connected: a DBA prints the schema without a store
    assert fresh.migration_sql() == sql


async def test_capability_flags_are_booleans_on_the_class(store: Store) -> None:
    cls = type(store.build())
    assert isinstance(cls.name, str) and cls.name
    for flag in ("supports_transactions", "sync_enqueue", "shared_across_loops", "hands_off"):
        assert isinstance(getattr(cls, flag), bool), f"{cls.__name__}.{flag} is not a bool"


#: What each store declares (the documented table in docs/architecture.md): a change
#: here is a change of what users can rely on, not a refactor.
DECLARED = {
    "sqlite": (True, True, True, False),
    "postgres": (True, False, False, False),
    "redis": (False, False, False, True),
}


async def test_each_store_declares_its_documented_capabilities(store: Store) -> None:
    cls = type(store.build())
    flags = ("supports_transactions", "sync_enqueue", "shared_across_loops", "hands_off")
    assert tuple(getattr(cls, f) for f in flags) == DECLARED[store.kind]


async def test_a_shared_instance_serves_other_threads_and_loops(backend: Backend) -> None:
    """``shared_across_loops``: one connected instance serves every event loop and thread
    (checked only where the flag is set)."""
    if not type(backend).shared_across_loops:
        return

    async def elsewhere() -> tuple[int, str]:
        [job_id] = await enqueue(backend, new_job("from-a-thread"))
        job = await get(backend, job_id)
        return job_id, job.name

    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = asyncio.run(elsewhere())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert "error" not in box, box.get("error")
    job_id, name = box["result"]  # type: ignore[misc]
    assert name == "from-a-thread"
    assert (await get(backend, job_id)).name == "from-a-thread"  # and on this loop
