"""An unreachable store: enqueue raises BackendError (never an id that was not stored);
a dormant queue and an enqueue-only process refuse clearly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import conveyor
from tests.conftest import Store


def _unreachable(store: Store, tmp_path: Path) -> conveyor.Queue:
    if store.backend == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the database's directory should be")
        return conveyor.Queue(f"sqlite:///{blocker / 'jobs.db'}")
    if store.backend == "postgres":
        return conveyor.Queue(
            "postgresql://postgres@127.0.0.1:1/test?pool_timeout=1", schema=store.token
        )
    return conveyor.Queue("redis://127.0.0.1:1/0", prefix=store.token)


async def test_enqueue_to_an_unreachable_store_raises_backend_error(
    store: Store, tmp_path: Path
) -> None:
    q = _unreachable(store, tmp_path)
    try:
        with pytest.raises(conveyor.BackendError):
            await asyncio.wait_for(q.enqueue("x", {"a": 1}), 60)
        with pytest.raises(conveyor.BackendError):
            await asyncio.wait_for(q.get_job(1), 60)
    finally:
        try:
            await asyncio.wait_for(q.close(), 30)
        except conveyor.ConveyorError:
            pass


async def test_enqueue_sync_to_an_unreachable_store_raises_backend_error(
    store: Store, tmp_path: Path
) -> None:
    q = _unreachable(store, tmp_path)
    try:
        with pytest.raises(conveyor.BackendError):
            await asyncio.wait_for(asyncio.to_thread(q.enqueue_sync, "x", None), 60)
    finally:
        try:
            await asyncio.wait_for(q.close(), 30)
        except conveyor.ConveyorError:
            pass


def test_a_dormant_queue_refuses_clearly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    q = conveyor.Queue.from_env()
    assert "CONVEYOR_URL" in caplog.text
    with pytest.raises(conveyor.QueueDormant):
        asyncio.run(q.enqueue("x"))
    with pytest.raises(conveyor.QueueDormant):
        q.enqueue_sync("x")
    with pytest.raises(conveyor.QueueDormant):
        q.worker()
    assert conveyor.Queue.from_env(dormant_ok=False).settings.url == "sqlite:///conveyor.db"


def test_an_enqueue_only_process_refuses_to_run_a_worker(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_WORKER", "false")
    with pytest.raises(conveyor.WorkerDisabled):
        store.queue().worker()
