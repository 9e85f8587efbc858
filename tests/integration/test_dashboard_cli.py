"""``conveyor dashboard`` serves the web app over HTTP, guarded by its token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

from tests.conftest import wait_for
from tests.integration.test_processes import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {
        **os.environ,
        "CONVEYOR_URL": f"sqlite:///{tmp_path / 'd.db'}",
        "CONVEYOR_DASHBOARD_TOKEN": "s3cret",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dashboard", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


async def test_dashboard_command_requires_its_token(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=5) as client:

        async def up() -> bool:
            try:
                await client.get("/metrics")
                return True
            except httpx.TransportError:
                return False

        await wait_for(up, timeout=30, interval=0.1)
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
