"""``conveyor worker`` as a real process: failing fast on a store it cannot use, its log
lines (text, JSON, quiet), and a job given where the queue belongs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.worker.worker import public_url
from tests.conftest import PG_URL, require_backend

START_BOUND = 15.0  # seconds: "within seconds", with room for a loaded CI machine

APP = """
import conveyor

queue = conveyor.Queue()


@queue.job("reindex[users]")
async def reindex(payload, ctx):
    return {"text": payload["text"]}


@queue.job("flaky", attempts=2, backoff=conveyor.Backoff.fixed(0))
async def flaky(payload, ctx):
    raise ValueError("the index is [bold]locked[/bold]")
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("NO_COLOR", None)
    return {**env, **extra}


def conveyor_cmd(
    *args: str, cwd: Path, url: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``conveyor ARGS`` in ``cwd`` against ``url``; the result and its run time."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=_env(CONVEYOR_URL=url, **(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.monotonic() - started


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "logapp.py").write_text(APP)
    return tmp_path


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_fails_fast(proc: subprocess.CompletedProcess[str], took: float, *causes: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert took < START_BOUND, f"took {took:.1f}s: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one clear line: no traceback, no retry noise
    assert lines[0].startswith("error: "), proc.stderr
    for cause in causes:
        assert cause in lines[0], proc.stderr


# -- a store it cannot use at start: exit 1 within seconds, with the cause -------------------


def test_unwritable_sqlite_directory_fails_at_start(app_dir: Path) -> None:
    blocker = app_dir / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'jobs.db'}"
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url)
    assert_fails_fast(proc, took, "cannot open SQLite database", str(blocker))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_read_only_sqlite_directory_fails_at_start(app_dir: Path) -> None:
    """A directory that exists but takes no new file, even for root (tests may run as
    root, to whom a chmod-ed directory is writable)."""
    url = "sqlite:////proc/self/conveyor-jobs.db"
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url)
    assert_fails_fast(proc, took, "cannot open SQLite database", "/proc/self/conveyor-jobs.db")


def test_redis_on_a_closed_port_fails_at_start(app_dir: Path) -> None:
    require_backend("redis")
    port = _closed_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url)
    assert_fails_fast(proc, took, "Redis connect failed", str(port))


def test_postgres_on_a_closed_port_fails_at_start(app_dir: Path) -> None:
    require_backend("postgres")
    port = _closed_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url)
    assert_fails_fast(proc, took, f"port {port} failed: Connection refused")


def test_postgres_wrong_database_fails_at_start_with_psycopgs_reason(app_dir: Path) -> None:
    require_backend("postgres")
    url = PG_URL.rsplit("/", 1)[0] + "/conveyor_no_such_db"
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url)
    assert_fails_fast(proc, took, 'database "conveyor_no_such_db" does not exist')
    assert "pool initialization" not in proc.stderr


@pytest.fixture
def role_without_create() -> Iterator[str]:
    """A login role that may connect to the test database but not create a schema."""
    require_backend("postgres")
    import psycopg

    role = "conveyor_nocreate_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_postgres_role_without_create_fails_at_start(
    app_dir: Path, role_without_create: str
) -> None:
    url = PG_URL.replace("postgres@", f"{role_without_create}@", 1)
    assert url != PG_URL
    env = {"CONVEYOR_SCHEMA": "t_" + uuid.uuid4().hex[:12]}
    proc, took = conveyor_cmd("worker", "logapp:queue", cwd=app_dir, url=url, env=env)
    assert_fails_fast(proc, took, "PostgreSQL migrate failed", "permission denied")


def test_start_failure_under_json_logging_is_one_json_line(app_dir: Path) -> None:
    require_backend("redis")
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    proc, took = conveyor_cmd(
        "worker", "logapp:queue", "--log-format", "json", cwd=app_dir, url=url
    )
    assert proc.returncode == 1 and took < START_BOUND, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and "Redis connect failed" in record["message"]


# -- one log line per outcome -----------------------------------------------------------------


def _enqueue(url: str) -> None:
    """Enqueue one job that completes and one that fails twice, then fails."""
    code = textwrap.dedent(
        """
        import asyncio, conveyor
        async def main():
            q = conveyor.Queue()
            await q.enqueue("reindex[users]", {"text": "[bold]x[/bold]"})
            await q.enqueue("flaky", {}, attempts=2)
            await q.close()
        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", code], env=_env(CONVEYOR_URL=url), check=True)


def test_worker_logs_one_line_per_outcome(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir / 'jobs.db'}"
    _enqueue(url)
    proc, _ = conveyor_cmd("worker", "logapp:queue", "--once", cwd=app_dir, url=url)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"started for one pass on {url} (concurrency 10, channels all)" in err
    assert "INFO conveyor: job reindex[users] #1 attempt 1/1 completed in " in err
    assert "INFO conveyor: job flaky #2 attempt 1/2 failed in " in err
    assert ", retrying in 0.0s: ValueError: the index is [bold]locked[/bold]" in err
    assert "INFO conveyor: job flaky #2 attempt 2/2 failed in " in err
    assert err.count("Traceback (most recent call last)") == 2  # under each failure
    assert 'raise ValueError("the index is [bold]locked[/bold]")' in err
    assert "processed 3 job(s)" in err


def test_worker_json_logs(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir / 'jobs.db'}"
    _enqueue(url)
    args = ("worker", "logapp:queue", "--once", "--log-format", "json")
    proc, _ = conveyor_cmd(*args, cwd=app_dir, url=url)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    for r in records:
        assert {"time", "level", "logger", "message"} <= r.keys()
    started = next(r for r in records if r.get("event") == "worker_started")
    assert started["store"] == url
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if "job_id" in r:
            by_event.setdefault(r["event"], []).append(r)
    [done] = by_event["completed"]
    assert (done["job_id"], done["job_name"], done["attempt"]) == (1, "reindex[users]", 1)
    assert done["level"] == "INFO" and done["logger"] == "conveyor"
    assert isinstance(done["duration"], float) and done["duration"] >= 0
    assert "traceback" not in done and "error" not in done
    [retry] = by_event["retrying"]
    [failed] = by_event["failed"]
    assert (retry["attempt"], failed["attempt"]) == (1, 2)
    for r in (retry, failed):
        assert r["job_name"] == "flaky"
        assert r["error"] == "ValueError: the index is [bold]locked[/bold]"
        assert r["traceback"].startswith("Traceback (most recent call last)")
    assert retry["retry_in"] == 0.0


def test_quiet_worker_logs_warnings_only(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir / 'jobs.db'}"
    _enqueue(url)
    proc, _ = conveyor_cmd("worker", "logapp:queue", "--once", "-q", cwd=app_dir, url=url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_the_start_line_shows_the_store_without_credentials(app_dir: Path) -> None:
    require_backend("postgres")
    schema = "t_" + uuid.uuid4().hex[:12]
    url = PG_URL.replace("postgres@", "postgres:s3cret@", 1)  # trust auth ignores it
    assert url != PG_URL
    try:
        proc, _ = conveyor_cmd(
            "worker",
            "logapp:queue",
            "--once",
            cwd=app_dir,
            url=url,
            env={"CONVEYOR_SCHEMA": schema},
        )
    finally:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert proc.returncode == 0, proc.stderr
    assert f"on {public_url(url)} (" in proc.stderr
    assert "s3cret" not in proc.stderr and "postgres@" not in proc.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///conveyor.db", "sqlite:///conveyor.db"),
        ("sqlite:////tmp/jobs.db?synchronous=full", "sqlite:////tmp/jobs.db?synchronous=full"),
        (
            "postgresql://u:pw@db:5432/app?sslmode=require",
            "postgresql://db:5432/app?sslmode=require",
        ),
        (
            "postgresql://db/app?password=pw&application_name=x",
            "postgresql://db/app?application_name=x",
        ),
        ("redis://:p/w@d@cache:6379/0", "redis://cache:6379/0"),
        ("rediss://user@cache/1", "rediss://cache/1"),
    ],
)
def test_public_url_drops_credentials(url: str, shown: str) -> None:
    assert public_url(url) == shown


# -- a job where the queue belongs --------------------------------------------------------------


def test_worker_given_a_job_says_which_attribute_is_the_queue(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir / 'jobs.db'}"
    proc, _ = conveyor_cmd("worker", "logapp:flaky", cwd=app_dir, url=url)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert line == "error: logapp:flaky is the job 'flaky', not a conveyor.Queue: use logapp:queue"
