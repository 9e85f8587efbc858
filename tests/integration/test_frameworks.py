"""The framework integrations under examples/ run for real: each app is started as its own
process (uvicorn, Flask's server, Django's manage.py) beside a real ``conveyor worker``.

- FastAPI: ``POST /signup`` enqueues; the mounted status API shows the job ``completed``
  to its own account only; the mounted dashboard answers the admin.
- Flask: ``POST /signup`` enqueues with ``enqueue_sync``; ``GET /jobs/<id>`` shows it done.
- Django (PostgreSQL, a database per test): an order row and its job commit together in
  ``transaction.atomic()`` through Django's own psycopg connection, or the job is enqueued
  in ``transaction.on_commit``; a rollback leaves neither.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

import conveyor
from tests.conftest import PG_URL, require_backend

ROOT = Path(__file__).resolve().parents[2]
DJANGO_DIR = ROOT / "examples" / "django_app"
DEADLINE = 30.0  # seconds for anything to happen, with room for a loaded machine
FAST = {"CONVEYOR_POLL_INTERVAL": "0.1", "CONVEYOR_SWEEP_INTERVAL": "0.2"}
T = TypeVar("T")


def _env(**extra: str) -> dict[str, str]:
    """This environment without any CONVEYOR_* of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, "PYTHONUNBUFFERED": "1", **FAST, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A long-running child process whose output goes to a file (never a full pipe)."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited {self.proc.returncode}:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the worker drains, the servers shut down
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@contextmanager
def service(args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[Service]:
    svc = Service(args, env=env, cwd=cwd, log=log)
    try:
        yield svc
    finally:
        svc.stop()


def poll(check: Callable[[], T | None], what: str, *services: Service) -> T:
    """``check()`` until it returns something truthy, else fail after DEADLINE seconds
    (at once, with its output, when one of ``services`` has died)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        for svc in services:
            svc.check_alive()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.log.name}\n{s.output()}" for s in services)
            raise AssertionError(f"{what}: not within {DEADLINE}s\n{logs}")
        time.sleep(0.05)


def _get_json(url: str, **kwargs: Any) -> Any:
    """The JSON answer of a 200, else None (the server may not be up yet)."""
    try:
        response = httpx.get(url, timeout=5, **kwargs)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


# -- FastAPI -------------------------------------------------------------------------------


def test_fastapi_signup_is_run_by_a_worker_process_and_shown_by_the_status_api(
    tmp_path: Path,
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(CONVEYOR_URL=f"sqlite:///{tmp_path / 'jobs.db'}")
    web_env = {**env, "CONVEYOR_WORKER": "false", "EXAMPLE_ADMIN_TOKEN": "admin-secret"}
    uvicorn = [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app"]
    with (
        service(
            [*uvicorn, "--port", str(port)], env=web_env, cwd=ROOT, log=tmp_path / "web.log"
        ) as web,
        service(
            [sys.executable, "-m", "conveyor", "worker", "examples.fastapi_app.jobs:queue"],
            env=env,
            cwd=ROOT,
            log=tmp_path / "worker.log",
        ) as worker,
    ):
        poll(lambda: _get_json(f"{base}/healthz"), "the app answers", web)

        signup = httpx.post(f"{base}/signup", json={"email": "ada@example.com"}, timeout=10)
        assert signup.status_code == 202, signup.text
        body = signup.json()
        status_url = base + body["status"]
        assert body["status"] == f"/jobs/api/jobs/{body['job_id']}"
        user = {"Authorization": f"Bearer {body['token']}"}

        status = poll(
            lambda: (s := _get_json(status_url, headers=user)) and s["state"] == "completed" and s,
            "the job completes",
            web,
            worker,
        )
        assert status["id"] == body["job_id"]
        assert status["name"] == "send-welcome"
        assert status["result"] == {"sent_to": "ada@example.com", "template": "welcome"}
        assert status["progress"] == 100 and status["attempts"] == 1

        # The status API is tenant-scoped: no credentials 401, another account 404.
        assert httpx.get(status_url, timeout=5).status_code == 401
        other = httpx.post(f"{base}/signup", json={"email": "bob@example.com"}, timeout=10)
        bob = {"Authorization": f"Bearer {other.json()['token']}"}
        assert httpx.get(status_url, headers=bob, timeout=5).status_code == 404
        # The dashboard is mounted too, for the admin only.
        admin = {"Authorization": "Bearer admin-secret"}
        assert httpx.get(f"{base}/jobs/dashboard", headers=admin, timeout=5).status_code == 200
        assert httpx.get(f"{base}/jobs/dashboard", headers=user, timeout=5).status_code == 403
    assert "send-welcome #" in worker.output() and "completed" in worker.output()


# -- Flask ---------------------------------------------------------------------------------


def test_flask_enqueue_sync_is_run_by_a_worker_process(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(CONVEYOR_URL=f"sqlite:///{tmp_path / 'jobs.db'}")
    flask = [sys.executable, "-m", "flask", "--app", "examples.flask_app.app", "run"]
    with (
        service([*flask, "--port", str(port)], env=env, cwd=ROOT, log=tmp_path / "web.log") as web,
        service(
            [sys.executable, "-m", "conveyor", "worker", "examples.flask_app.jobs:queue"],
            env=env,
            cwd=ROOT,
            log=tmp_path / "worker.log",
        ) as worker,
    ):
        poll(lambda: _get_json(f"{base}/healthz"), "the app answers", web)
        signup = httpx.post(f"{base}/signup", json={"email": "ada@example.com"}, timeout=10)
        assert signup.status_code == 202, signup.text
        job_id = signup.json()["job_id"]

        status = poll(
            lambda: (s := _get_json(f"{base}/jobs/{job_id}")) and s["state"] == "completed" and s,
            "the job completes",
            web,
            worker,
        )
        assert status["result"] == {"sent_to": "ada@example.com", "template": "welcome"}
        assert httpx.get(f"{base}/jobs/999999", timeout=5).status_code == 404
        bad = httpx.post(f"{base}/signup", json={"email": "nope"}, timeout=10)
        assert bad.status_code == 400


# -- Django --------------------------------------------------------------------------------


class Django:
    """The example project on its own database: ``manage.py`` and ``conveyor`` commands."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.env = _env(DATABASE_URL=url)
        self.tmp_path = tmp_path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, *args],
            env=self.env,
            cwd=DJANGO_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("manage.py", *args, check=check)

    def orders(self) -> list[tuple[int, str, str]]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT id, item, status FROM orders_order ORDER BY id")
            return [(int(r[0]), str(r[1]), str(r[2])) for r in rows.fetchall()]

    def jobs(self) -> list[conveyor.Job]:
        async def read() -> list[conveyor.Job]:
            queue = conveyor.Queue(self.url)
            try:
                return await queue.list_jobs()
            finally:
                await queue.close()

        return asyncio.run(read())


@pytest.fixture
def django_project(tmp_path: Path) -> Iterator[Django]:
    """A fresh PostgreSQL database, migrated by Django and by conveyor, dropped afterwards."""
    require_backend("postgres")
    import psycopg

    name = "conveyor_django_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        project = Django(urlunsplit(urlsplit(PG_URL)._replace(path=f"/{name}")), tmp_path)
        project.manage("migrate", "--verbosity", "0")
        project.run("-m", "conveyor", "--app", "shop.worker:queue", "migrate")
        yield project
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ENQUEUE_WAYS = pytest.mark.parametrize("way", [[], ["--on-commit"]], ids=["atomic", "on_commit"])


@ENQUEUE_WAYS
def test_django_commit_stores_order_and_job_and_a_worker_confirms_it(
    django_project: Django, way: list[str]
) -> None:
    placed = json.loads(django_project.manage("place_order", "teapot", *way).stdout)
    order_id, job_ids = placed["order_id"], placed["job_ids"]
    assert len(job_ids) == 1
    if not way:  # the view does the same through a request
        script = (
            "from django.test import Client; "
            "r = Client().post('/orders/', {'item': 'kettle'}); "
            "print(r.status_code, r.content.decode())"
        )
        out = django_project.manage("shell", "-c", script).stdout.strip().splitlines()
        code, _, answer = out[-1].partition(" ")  # the last line: Django 5.2 says more first
        assert code == "201", answer
        job_ids.append(json.loads(answer)["job_id"])

    jobs = {job.id: job for job in django_project.jobs()}
    assert set(jobs) == set(job_ids)
    assert {job.state for job in jobs.values()} == {conveyor.JobState.QUEUED}
    assert jobs[job_ids[0]].payload == {"order_id": order_id}
    assert {status for _, _, status in django_project.orders()} == {"pending"}

    done = django_project.run("-m", "conveyor", "worker", "shop.worker:queue", "--once")
    assert f"processed {len(job_ids)} job(s)" in done.stderr, done.stderr

    jobs = {job.id: job for job in django_project.jobs()}
    assert {job.state for job in jobs.values()} == {conveyor.JobState.COMPLETED}
    assert jobs[job_ids[0]].result == {"order_id": order_id, "status": "confirmed"}
    assert {status for _, _, status in django_project.orders()} == {"confirmed"}


@ENQUEUE_WAYS
def test_django_rollback_leaves_neither_order_nor_job(
    django_project: Django, way: list[str]
) -> None:
    failed = django_project.manage("place_order", "kettle", "--fail", *way, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "order for 'kettle' rolled back: card declined" in failed.stderr
    assert django_project.orders() == []
    assert django_project.jobs() == []
