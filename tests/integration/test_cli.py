"""The ``conveyor`` command, run as a real process against every backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conveyor import JobSpec, JobState
from conveyor.backends.base import ClaimParams
from tests.conftest import Store
from tests.integration.test_processes import ROOT, fast_queue


def cli(
    store: Store, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **store.env, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_migrate_stats_and_jobs_commands(store: Store) -> None:
    r = cli(store, "migrate")
    assert r.returncode == 0, r.stderr
    q = await fast_queue(store)
    ok = await q.enqueue("count", {"probe": "/dev/null", "n": 1}, tags=["a"])
    bad = await q.enqueue("nobody-handles-this", {"x": 1})

    r = cli(store, "stats", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["queued"] == 2

    r = cli(store, "worker", "tests.integration.app:queue", "--once")
    assert r.returncode == 0, r.stderr
    assert "processed 2 job(s)" in r.stderr

    r = cli(store, "jobs", "list", "--json", "--state", "completed")
    assert [j["id"] for j in json.loads(r.stdout)] == [ok]
    r = cli(store, "jobs", "list", "--tag", "a", "--json")
    assert [j["id"] for j in json.loads(r.stdout)] == [ok]
    r = cli(store, "jobs", "list")  # the human table
    assert r.returncode == 0 and "completed" in r.stdout and "failed" in r.stdout

    r = cli(store, "jobs", "show", str(bad), "--json")
    shown = json.loads(r.stdout)
    assert shown["state"] == "failed" and shown["last_error"]["type"] == "UnknownJob"
    assert [e["type"] for e in shown["events"]][-1] == "orphaned"

    r = cli(store, "jobs", "retry", str(bad))
    assert r.returncode == 0, r.stderr
    job = await q.get_job(bad)
    assert job is not None and job.state is JobState.QUEUED

    r = cli(store, "jobs", "cancel", str(bad))
    assert r.returncode == 0
    job = await q.get_job(bad)
    assert job is not None and job.state is JobState.CANCELLED


async def test_jobs_show_the_stalls(store: Store) -> None:
    q = await fast_queue(store)
    job_id = await q.enqueue("count", {"probe": "/dev/null", "n": 1})
    backend = await q.engine.backend()
    now = q.engine.clock.now()  # a worker claims it and dies: its lease is already over
    await backend.claim(ClaimParams("dead", "dead", 1, now, now - 1))
    await q.run_maintenance()
    r = cli(store, "jobs", "show", str(job_id), "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["state"], shown["attempts"], shown["stalls"]) == ("queued", 1, 1)
    r = cli(store, "jobs", "show", str(job_id))  # the human table has the row too
    assert r.returncode == 0 and "stalls" in r.stdout


async def test_errors_exit_1_with_a_message_and_bad_usage_exits_2(store: Store) -> None:
    await fast_queue(store)
    r = cli(store, "jobs", "retry", "999999")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli(store, "jobs", "show", "999999")
    assert r.returncode == 1 and "not found" in r.stderr
    r = cli(store, "jobs", "cancel", "999999")
    assert r.returncode == 1
    r = cli(store, "jobs", "list", "--state", "bogus")
    assert r.returncode == 2
    r = cli(store, "worker")
    assert r.returncode == 2
    r = cli(store, "worker", "no.such.module:queue")
    assert r.returncode == 2 and "cannot import" in r.stderr


async def test_worker_refuses_when_disabled(store: Store) -> None:
    r = cli(store, "worker", "tests.integration.app:queue", env={"CONVEYOR_WORKER": "false"})
    assert r.returncode == 1
    assert "CONVEYOR_WORKER=false" in r.stderr


async def test_worker_unordered_flag_and_env_twin(store: Store) -> None:
    q = await fast_queue(store)
    app = "tests.integration.app:queue"
    await q.enqueue_many([JobSpec("count", {"probe": "/dev/null", "n": i}) for i in range(3)])
    r = cli(store, "worker", app, "--unordered", "--once")
    assert r.returncode == 0, r.stderr
    assert "processed 3 job(s)" in r.stderr
    await q.enqueue("count", {"probe": "/dev/null", "n": 3})
    r = cli(store, "worker", app, "--once", env={"CONVEYOR_ORDERED": "false"})
    assert r.returncode == 0, r.stderr
    assert "processed 1 job(s)" in r.stderr
    r = cli(store, "worker", app, "--once", env={"CONVEYOR_ORDERED": "sometimes"})
    assert r.returncode == 2, r.stderr  # not a boolean: a usage error, nothing run


async def test_cron_commands(store: Store) -> None:
    q = await fast_queue(store)
    await q.add_cron("digest", "0 6 * * *", job="count", payload={"probe": "/dev/null", "n": 0})
    r = cli(store, "cron", "list", "--json")
    assert [s["name"] for s in json.loads(r.stdout)] == ["digest"]
    assert cli(store, "cron", "pause", "digest").returncode == 0
    assert json.loads(cli(store, "cron", "list", "--json").stdout)[0]["paused"] is True
    assert cli(store, "cron", "resume", "digest").returncode == 0
    assert json.loads(cli(store, "cron", "list", "--json").stdout)[0]["paused"] is False
    assert cli(store, "cron", "remove", "digest").returncode == 0
    assert json.loads(cli(store, "cron", "list", "--json").stdout) == []
    r = cli(store, "cron", "pause", "nope")
    assert r.returncode == 1 and "no schedule" in r.stderr


@pytest.mark.parametrize("backend_name", ["postgres"], indirect=True)
async def test_migrate_sql_prints_the_schema(store: Store) -> None:
    r = cli(store, "migrate", "--sql")
    assert r.returncode == 0, r.stderr
    assert "CREATE TABLE" in r.stdout and store.token in r.stdout


def test_shell_completion_is_served(tmp_path: object) -> None:
    env = {**os.environ, "_CONVEYOR_COMPLETE": "bash_source"}
    script = os.path.join(os.path.dirname(sys.executable), "conveyor")  # the console script
    out = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "_conveyor_completion" in out.stdout, out.stderr
