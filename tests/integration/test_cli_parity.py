"""The CLI parity commands (enqueue, channels, clean, bulk retry/cancel, cron add/edit/run),
run as real ``conveyor`` processes against every backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conveyor import JobState
from tests.conftest import Store, wait_for
from tests.integration.test_cli import cli
from tests.integration.test_processes import ROOT, fast_queue


def cli_input(store: Store, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` with ``stdin`` typed in (a confirmation)."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**os.environ, **store.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error:"), r.stderr
    assert needle in r.stderr, r.stderr
    assert r.stdout == ""


async def test_enqueue(store: Store) -> None:
    q = await fast_queue(store)
    r = cli(store, "enqueue", "anything", "--payload", '{"n": 1}', "--priority", "3")
    assert r.returncode == 0, r.stderr
    job = await q.get_job(int(r.stdout))
    assert job is not None and (job.name, job.payload, job.priority) == ("anything", {"n": 1}, 3)

    r = cli(
        store,
        *("enqueue", "count", "--payload", "[1, 2]", "--delay", "5m", "--channel", "mail"),
        *("--attempts", "4", "--tenant", "acme", "--group", "g1", "--tag", "a", "--tag", "b"),
        *("--idempotency-key", "k1", "--json"),
    )
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    job = await q.get_job(job_id)
    assert job is not None and job.state is JobState.SCHEDULED
    assert (job.channel, job.max_attempts, job.tenant, job.group) == ("mail", 4, "acme", "g1")
    assert sorted(job.tags) == ["a", "b"]
    r = cli(store, "enqueue", "count", "--tenant", "acme", "--idempotency-key", "k1", "--json")
    assert json.loads(r.stdout) == {"id": job_id}  # the same key, the same job

    before = await q.counts()
    one_error(cli(store, "enqueue", "count", "--payload", "{nope"), 2, "not valid JSON")
    one_error(cli(store, "enqueue", "count", "--delay", "soon"), 2, "--delay")
    one_error(cli(store, "enqueue", "count", "--attempts", "0"), 1, "attempts")
    # with --app the names are strict: a typo is refused
    r = cli(store, "--app", "tests.integration.app:queue", "enqueue", "cuont")
    one_error(r, 1, "cuont")
    assert await q.counts() == before  # nothing written


async def test_channels_pause_and_resume(store: Store) -> None:
    q = await fast_queue(store)
    await q.enqueue("count", {"probe": "/dev/null", "n": 1}, channel="mail")
    r = cli(store, "channels", "pause", "mail")
    assert r.returncode == 0 and r.stdout == "channel mail paused\n", r.stderr
    app = "tests.integration.app:queue"
    r = cli(store, "worker", app, "--once")
    assert r.returncode == 0 and "processed 0 job(s)" in r.stderr, r.stderr
    r = cli(store, "channels", "resume", "mail", "--json")
    assert json.loads(r.stdout) == {"channel": "mail", "paused": False}
    r = cli(store, "channels", "pause", "--all", "--json")
    assert json.loads(r.stdout) == {"channel": None, "paused": True}
    r = cli(store, "channels", "resume", "--all")
    assert r.returncode == 0 and r.stdout == "every channel resumed\n"
    r = cli(store, "worker", app, "--once")
    assert "processed 1 job(s)" in r.stderr, r.stderr

    one_error(cli(store, "channels", "pause"), 2, "NAME or --all")
    one_error(cli(store, "channels", "pause", "mail", "--all"), 2, "NAME or --all")
    one_error(cli(store, "channels", "pause", ""), 1, "channel")


async def test_clean(store: Store) -> None:
    q = await fast_queue(store)
    ids = [await q.enqueue("count", {"n": i}) for i in range(3)]
    for job_id in ids:
        assert await q.cancel(job_id)
    one_error(cli(store, "clean", "--state", "cancelled", "--older-than", "7x"), 2, "7x")
    assert (await q.counts())["cancelled"] == 3  # nothing removed
    r = cli(store, "clean", "--state", "cancelled", "--older-than", "1h", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"removed": 0}, r.stderr
    r = cli(store, "clean", "--state", "failed", "--older-than", "0s")
    assert r.returncode == 0 and r.stdout == "removed 0 failed job(s)\n", r.stderr
    # a little later they finished more than 0s ago
    r = cli(store, "clean", "--state", "cancelled", "--older-than", "0")
    assert r.returncode == 0 and r.stdout == "removed 3 cancelled job(s)\n", r.stderr
    assert (await q.counts())["cancelled"] == 0


async def test_bulk_retry_and_cancel(store: Store) -> None:
    q = await fast_queue(store)
    mine = [await q.enqueue("report", {"n": i}, channel="c1") for i in range(3)]
    other = await q.enqueue("other", {}, channel="c1")

    # selection by filter, with the count and a confirmation
    r = cli_input(store, "n\n", "jobs", "cancel", "--all", "--name", "report")
    one_error_line = r.stderr.splitlines()
    assert r.returncode == 1 and "3 job(s) match" in one_error_line[0], r.stderr
    assert (await q.counts())["cancelled"] == 0  # declined: nothing done
    r = cli_input(store, "y\n", "jobs", "cancel", "--all", "--name", "report")
    assert r.returncode == 0, r.stderr
    assert "3 job(s) match" in r.stderr and r.stdout == "3 of 3 job(s) cancelled\n"
    for job_id in mine:
        job = await q.get_job(job_id)
        assert job is not None and job.state is JobState.CANCELLED
    job = await q.get_job(other)
    assert job is not None and job.state is JobState.QUEUED

    r = cli(
        store,
        "jobs",
        "retry",
        "--all",
        "--state",
        "cancelled",
        "--channel",
        "c1",
        "--yes",
        "--json",
    )
    assert r.returncode == 0 and json.loads(r.stdout) == {"matched": 3, "done": 3}, r.stderr
    assert (await q.counts())["queued"] == 4
    r = cli(store, "jobs", "retry", "--all", "--yes", "--json")  # nothing failed or cancelled
    assert json.loads(r.stdout) == {"matched": 0, "done": 0}
    r = cli(store, "jobs", "cancel", "--all", "--tenant", "nobody", "--yes")
    assert r.returncode == 0 and r.stdout == "0 of 0 job(s) cancelled\n"

    # the one-id form is unchanged
    r = cli(store, "jobs", "cancel", str(other))
    assert r.returncode == 0 and r.stdout == f"job {other} cancelled\n"
    r = cli(store, "jobs", "retry", str(other))
    assert r.returncode == 0 and r.stdout == f"job {other} queued again\n"

    before = await q.counts()
    one_error(cli(store, "jobs", "retry", "--all", "--state", "queued", "--yes"), 2, "--state")
    one_error(cli(store, "jobs", "cancel", "--name", "report"), 2, "--all")
    one_error(cli(store, "jobs", "cancel", str(other), "--all"), 2, "not both")
    assert await q.counts() == before


async def test_bulk_pages_through_every_match(store: Store) -> None:
    q = await fast_queue(store)
    from conveyor import JobSpec

    await q.enqueue_many([JobSpec("bulk", {"n": i}) for i in range(1005)])
    r = cli(store, "jobs", "cancel", "--all", "--state", "queued", "--yes", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"matched": 1005, "done": 1005}
    assert (await q.counts())["cancelled"] == 1005


async def test_cron_add_edit_run(store: Store) -> None:
    q = await fast_queue(store)
    r = cli(
        store,
        "cron",
        "add",
        "digest",
        "0 6 * * *",
        "--job",
        "count",
        "--payload",
        '{"n": 0}',
        "--timezone",
        "Europe/Amsterdam",
    )
    assert r.returncode == 0 and r.stdout.startswith("schedule digest saved"), r.stderr
    (s,) = await q.list_cron()
    assert (s.expression, s.job, s.payload, s.timezone) == (
        "0 6 * * *",
        "count",
        {"n": 0},
        "Europe/Amsterdam",
    )
    r = cli(store, "cron", "edit", "digest", "--payload", '{"n": 1}', "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["timezone"] == "Europe/Amsterdam"  # only the payload changed
    (s,) = await q.list_cron()
    assert (s.expression, s.payload) == ("0 6 * * *", {"n": 1})
    r = cli(store, "cron", "edit", "digest", "30 7 * * *")
    assert r.returncode == 0 and r.stdout.startswith("schedule digest edited"), r.stderr
    r = cli(store, "cron", "add", "other", "@hourly", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["job"] == "other", r.stderr

    r = cli(store, "cron", "run", "digest")
    assert r.returncode == 0, r.stderr
    job = await q.get_job(int(r.stdout))
    assert job is not None and (job.name, job.payload) == ("count", {"n": 1})
    r = cli(store, "cron", "run", "digest", "--json")
    assert isinstance(json.loads(r.stdout)["id"], int)

    before = await q.list_cron()
    one_error(cli(store, "cron", "add", "x", "bogus"), 1, "bogus")
    one_error(cli(store, "cron", "add", "x", "@daily", "--payload", "{"), 2, "JSON")
    one_error(cli(store, "cron", "edit", "digest", "--timezone", "Mars/Olympus"), 1, "Mars")
    one_error(cli(store, "cron", "edit", "digest"), 2, "needs something")
    one_error(cli(store, "cron", "edit", "nope", "--job", "x"), 1, "nope")
    one_error(cli(store, "cron", "run", "nope"), 1, "nope")
    assert await q.list_cron() == before


async def test_write_commands_do_not_create_a_sqlite_store(store: Store, tmp_path: object) -> None:
    if store.backend != "sqlite":
        return
    missing = f"sqlite:///{tmp_path}/missing.db"
    for args in (
        ("enqueue", "x"),
        ("channels", "pause", "--all"),
        ("clean", "--state", "failed", "--older-than", "1d"),
        ("jobs", "retry", "--all", "--yes"),
        ("cron", "run", "x"),
        ("jobs", "delete", "--all", "--yes"),
        ("channels", "list"),
        ("workers",),
    ):
        r = cli(store, "--url", missing, *args)
        one_error(r, 1, "no store at")
    assert not os.path.exists(f"{tmp_path}/missing.db")


async def test_jobs_show_lists_steps_tokens_the_wait_and_tracebacks(
    store: Store, tmp_path: object
) -> None:
    q = await fast_queue(store)
    probe = f"{tmp_path}/probe"
    job_id = await q.enqueue("await-approval", {"probe": probe, "timeout": "1h"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "tests.integration.app:queue", "-q"],
        env={**os.environ, **store.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:

        async def waiting() -> bool:
            job = await q.get_job(job_id)
            return job is not None and job.state is JobState.WAITING

        await wait_for(waiting, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    job = await q.get_job(job_id)
    assert job is not None and job.wait_token is not None
    r = cli(store, "jobs", "show", str(job_id))
    assert r.returncode == 0, r.stderr
    assert f"waiting for token {job.wait_token}" in r.stdout
    assert "conveyor:token:1" in r.stdout and "ask" in r.stdout  # steps
    assert "pending, expires" in r.stdout  # the token
    shown = json.loads(cli(store, "jobs", "show", str(job_id), "--json").stdout)
    assert shown["wait_token"] == job.wait_token
    assert [s["name"] for s in shown["steps"]] == ["conveyor:token:1", "ask"]
    assert shown["tokens"][0]["state"] == "pending"

    failed = await q.enqueue("no-such-handler-here", {})
    await q.worker().run_once()
    r = cli(store, "jobs", "show", str(failed))
    assert "UnknownJob" in r.stdout and "errors" in r.stdout


async def test_jobs_delete_list_paging_channels_list_and_workers(store: Store) -> None:
    q = await fast_queue(store)
    old = [await q.enqueue("report.daily", {"n": i}, channel="c2") for i in range(3)]
    keep = await q.enqueue("other", {}, channel="c2")

    # jobs list: a name prefix, and cursor paging with --before
    r = cli(store, "jobs", "list", "--name-prefix", "report.", "--limit", "2", "--json")
    page = json.loads(r.stdout)
    assert [j["id"] for j in page] == [old[2], old[1]]
    r = cli(store, "jobs", "list", "--name-prefix", "report.", "--limit", "2")
    assert f"more: --before {old[1]}" in r.stderr
    r = cli(store, "jobs", "list", "--name-prefix", "report.", "--before", str(old[1]), "--json")
    assert [j["id"] for j in json.loads(r.stdout)] == [old[0]]

    # jobs delete: by id, by filter with a count and a confirmation
    r = cli(store, "jobs", "delete", str(old[0]))
    assert r.returncode == 0 and r.stdout == f"job {old[0]} deleted\n", r.stderr
    assert await q.get_job(old[0]) is None
    one_error(cli(store, "jobs", "delete", str(old[0])), 1, "not found")
    r = cli_input(store, "y\n", "jobs", "delete", "--all", "--name", "report.daily")
    assert "2 job(s) match" in r.stderr and r.stdout == "2 of 2 job(s) deleted\n", r.stderr
    assert [j.id for j in await q.list_jobs()] == [keep]

    # channels list: counts and the pause flag
    await q.pause("c3")
    r = cli(store, "channels", "list", "--json")
    listed = json.loads(r.stdout)
    by_name = {c["name"]: c for c in listed["channels"]}
    assert by_name["c2"]["counts"]["queued"] == 1 and not by_name["c2"]["paused"]
    assert by_name["c3"]["paused"] and listed["all_paused"] is False
    r = cli(store, "channels", "list")
    assert r.returncode == 0 and "c2" in r.stdout and "c3" in r.stdout

    # workers: none running, then one
    r = cli(store, "workers", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "tests.integration.app:queue", "-q",
         "--channel", "c9", "--concurrency", "4"],
        env={**os.environ, **store.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )  # fmt: skip
    try:

        async def registered() -> list[dict[str, object]] | None:
            rows = json.loads(cli(store, "workers", "--json").stdout)
            return rows or None

        [row] = await wait_for(registered, timeout=30)
        assert (row["pid"], row["channels"], row["concurrency"]) == (proc.pid, ["c9"], 4)
        r = cli(store, "workers")
        assert str(proc.pid) in r.stdout and "0/4" in r.stdout
    finally:
        proc.terminate()
        proc.wait(30)
    assert json.loads(cli(store, "workers", "--json").stdout) == []  # said goodbye
