"""``conveyor dashboard`` serves the web app over HTTP, guarded by its token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import conveyor
from tests.conftest import wait_for
from tests.integration.test_processes import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(db: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``conveyor dashboard --port … ARGS`` on the SQLite file ``db``; yields its base URL."""
    port = _free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_DASHBOARD_")}
    full.update({"CONVEYOR_URL": f"sqlite:///{db}", **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dashboard", "--port", str(port), *args],
        env=full,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def served(tmp_path):  # type: ignore[no-untyped-def]
    with _serve(tmp_path / "d.db", env={"CONVEYOR_DASHBOARD_TOKEN": "s3cret"}) as url:
        yield url


async def _wait_up(client: httpx.AsyncClient) -> None:
    async def up() -> bool:
        try:
            await client.get("/metrics")
            return True
        except httpx.TransportError:
            return False

    await wait_for(up, timeout=30, interval=0.1)


async def _enqueue(db: Path) -> int:
    queue = conveyor.Queue(f"sqlite:///{db}")
    try:
        await queue.migrate()
        return await queue.enqueue("report", {"secret": "s3cret-payload"}, tenant="acme")
    finally:
        await queue.close()


async def _state(db: Path, job_id: int) -> str:
    queue = conveyor.Queue(f"sqlite:///{db}")
    try:
        job = await queue.get_job(job_id)
        assert job is not None
        return job.state.value
    finally:
        await queue.close()


async def test_dashboard_command_requires_its_token(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=5) as client:
        await _wait_up(client)
        assert (await client.get("/dashboard/api/stats")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "conveyor_up 1" in r.text
        assert (
            await client.get("/dashboard/api/stats", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        page = await client.get("/dashboard?token=s3cret")  # sets the cookie once
        assert page.status_code == 200 and "conveyor_token" in page.headers.get("set-cookie", "")
        stats = await client.get("/dashboard/api/stats")  # the client kept the cookie
        assert stats.status_code == 200


def test_dashboard_refuses_a_public_interface_without_a_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_DASHBOARD_TOKEN"}
    env["CONVEYOR_URL"] = f"sqlite:///{tmp_path / 'd.db'}"
    r = subprocess.run(
        [sys.executable, "-m", "conveyor", "dashboard", "--host", "0.0.0.0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--token" in r.stderr


async def test_loopback_without_a_token_refuses_other_host_names(tmp_path: Path) -> None:
    """DNS rebinding: a page on attacker.example, its name re-pointed at 127.0.0.1, must
    neither read jobs nor act on them through the tokenless loopback dashboard."""
    db = tmp_path / "d.db"
    job_id = await _enqueue(db)
    with _serve(db) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            await _wait_up(client)
            port = url.rsplit(":", 1)[1]
            rebound = {"Host": f"attacker.example:{port}"}
            for path in (f"/api/jobs/{job_id}", f"/dashboard/api/jobs/{job_id}", "/dashboard"):
                r = await client.get(path, headers=rebound)
                assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
                assert "s3cret" not in r.text
            origin = {**rebound, "Origin": f"http://attacker.example:{port}"}
            r = await client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=origin)
            assert r.status_code == 400
            assert await _state(db, job_id) == "queued"
            # The loopback names still work, and a same-origin POST goes through.
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                r = await client.get(f"/dashboard/api/jobs/{job_id}", headers={"Host": host})
                assert r.status_code == 200 and r.json()["payload"] == {"secret": "s3cret-payload"}
                assert r.headers["x-content-type-options"] == "nosniff"
            same = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
            r = await client.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=same)
            assert r.status_code == 200 and r.json()["state"] == "cancelled"


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_allowed_host_names_replace_the_default(tmp_path: Path, how: str) -> None:
    db = tmp_path / "d.db"
    job_id = await _enqueue(db)
    names = "jobs.example.com,*.internal.example"
    args = ("--allowed-host", "jobs.example.com", "--allowed-host", "*.internal.example")
    with (
        _serve(db, env={"CONVEYOR_DASHBOARD_ALLOWED_HOSTS": names})
        if how == "env"
        else _serve(db, *args)
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:

            async def up() -> bool:
                try:
                    await client.get("/metrics", headers={"Host": "jobs.example.com"})
                    return True
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=30, interval=0.1)
            for host, status in (
                ("jobs.example.com", 200),
                ("a.internal.example:8000", 200),
                ("localhost", 400),
                ("attacker.example", 400),
            ):
                r = await client.get(f"/api/jobs/{job_id}", headers={"Host": host})
                assert r.status_code == status, host


def test_a_malformed_allowed_host_is_bad_usage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_DASHBOARD_")}
    env["CONVEYOR_URL"] = f"sqlite:///{tmp_path / 'd.db'}"
    r = subprocess.run(
        [sys.executable, "-m", "conveyor", "dashboard", "--allowed-host", "http://x:80"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "Invalid value for '--allowed-host'" in r.stderr and "'http://x:80'" in r.stderr
