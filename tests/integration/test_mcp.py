"""``conveyor mcp`` driven through the official ``mcp`` SDK's own client (stdio, and one
streamable HTTP test) against a real server process, on every backend; plus
``install-mcp`` and ``--print-config``.

Each backend test starts one server process and checks everything that mode promises;
the jobs it inspects are made in-process (a failing handler run by ``run_once``), so
nothing waits on time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import conveyor
from conveyor import JobState
from tests.conftest import Store, wait_for
from tests.integration.test_processes import ROOT

APP = "tests.integration.app:queue"
READ = {"list_jobs", "get_job", "counts", "list_cron", "list_workers", "list_channels"}
WRITE = {"retry_job", "cancel_job", "pause_channel", "resume_channel", "enqueue"}
UNKNOWN = 987_654_321


@asynccontextmanager
async def connect(
    store: Store, tmp_path: Path, *args: str, command: list[str] | None = None
) -> AsyncIterator[ClientSession]:
    """A session with a ``conveyor mcp ARGS`` process on ``store`` (or ``command``,
    with only the store's environment, from another directory)."""
    if command is None:
        command = [sys.executable, "-m", "conveyor", "mcp", *args]
        env, cwd = {**store.env, "PYTHONPATH": str(ROOT)}, ROOT
    else:
        env, cwd = store.env, tmp_path
    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=cwd)
    with open(tmp_path / "mcp-server.log", "a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, read_timeout_seconds=30) as session,
        ):
            await session.initialize()
            yield session


async def tool_names(session: ClientSession) -> set[str]:
    return {t.name for t in (await session.list_tools()).tools}


async def call(session: ClientSession, tool: str, **args: Any) -> Any:
    """The tool's structured answer; fails the test on a tool error."""
    result = await session.call_tool(tool, args)
    assert not result.is_error, (tool, args, result.content)
    return result.structured_content


async def refused(session: ClientSession, tool: str, **args: Any) -> str:
    """The text of the tool error ``tool`` answers (fails the test if it succeeds)."""
    result = await session.call_tool(tool, args)
    assert result.is_error, (tool, args, result.structured_content)
    (content,) = result.content
    text: str = getattr(content, "text")  # noqa: B009
    assert text and "\n" not in text, text
    return text


async def seeded(store: Store) -> conveyor.Queue:
    """A queue on ``store`` with a failing handler ``boom`` and a channel ``mail`` job
    ``ok``; names are not checked, so the test can enqueue anything."""
    q = store.queue(strict_names=False)

    @q.job("boom")
    async def boom(payload: Any, ctx: conveyor.Context) -> None:
        ctx.log.info("trying %s", payload["n"])
        raise ValueError(f"kaboom {payload['n']}")

    @q.job("ok", channel="mail")
    async def ok(payload: Any, ctx: conveyor.Context) -> int:
        return 1

    await q.migrate()
    return q


async def fail_now(q: conveyor.Queue, n: int, **options: Any) -> int:
    """A ``boom`` job that has failed (its one attempt ran)."""
    job_id = await q.enqueue("boom", {"n": n}, **options)
    await q.worker(include=["boom"]).run_once()
    assert await state(q, job_id) is JobState.FAILED
    return job_id


async def state(q: conveyor.Queue, job_id: int) -> JobState:
    job = await q.get_job(job_id)
    assert job is not None
    return job.state


# -- read-only -----------------------------------------------------------------------------
async def test_read_only_server(store: Store, tmp_path: Path) -> None:
    q = await seeded(store)
    failed = await fail_now(q, 1, tags=["billing"], channel="mail")
    queued = [await q.enqueue("count", {"n": i}, tags=[f"t{i}"]) for i in range(3)]
    mine = await q.enqueue("count", {"n": 9}, tenant="acme")
    await q.add_cron("digest", "0 6 * * *", job="count", payload={"n": 0})

    async with connect(store, tmp_path) as s:  # no APP: the store from CONVEYOR_URL
        assert await tool_names(s) == READ

        assert await call(s, "counts") == await q.counts()
        assert (await call(s, "counts", channel="mail"))["failed"] == 1

        # newest first, paged with the cursor
        everything = [mine, *reversed(queued), failed]
        page = await call(s, "list_jobs", limit=2)
        assert [j["id"] for j in page["jobs"]] == everything[:2]
        assert page["next_cursor"] == everything[1]
        page = await call(s, "list_jobs", limit=2, before_id=page["next_cursor"])
        assert [j["id"] for j in page["jobs"]] == everything[2:4]
        page = await call(s, "list_jobs", limit=2, before_id=page["next_cursor"])
        assert [j["id"] for j in page["jobs"]] == everything[4:]
        assert page["next_cursor"] is None
        page = await call(s, "list_jobs", limit=5)
        assert len(page["jobs"]) == 5 and page["next_cursor"] is None

        # filters
        (summary,) = (await call(s, "list_jobs", state="failed"))["jobs"]
        assert summary["id"] == failed and summary["name"] == "boom"
        assert summary["last_error"] == {"type": "ValueError", "message": "kaboom 1"}
        assert "payload" not in summary
        ids = [j["id"] for j in (await call(s, "list_jobs", name="count"))["jobs"]]
        assert ids == [mine, *reversed(queued)]
        ids = [j["id"] for j in (await call(s, "list_jobs", tags=["t0", "t2"]))["jobs"]]
        assert ids == [queued[2], queued[0]]
        tagged = await call(s, "list_jobs", tags=["t0", "billing"], tag_mode="none")
        assert [j["id"] for j in tagged["jobs"]] == [mine, queued[2], queued[1]]
        ids = [j["id"] for j in (await call(s, "list_jobs", tenant="acme"))["jobs"]]
        assert ids == [mine]
        assert (await call(s, "list_jobs", channel="nowhere"))["jobs"] == []

        # one job, with its error's traceback, its logs and its events
        job = await call(s, "get_job", id=failed)
        assert job["state"] == "failed" and job["payload"] == {"n": 1}
        (err,) = job["errors"]
        assert err["type"] == "ValueError" and "kaboom 1" in err["traceback"]
        assert "raise ValueError" in err["traceback"]
        assert [r["message"] for r in job["logs"]] == ["trying 1"]
        assert "failed" in [e["type"] for e in job["events"]]

        (schedule,) = (await call(s, "list_cron"))["schedules"]
        assert (schedule["name"], schedule["job"]) == ("digest", "count")
        assert (await call(s, "list_workers"))["workers"] == []  # none is running
        listed = await call(s, "list_channels")
        assert listed["all_paused"] is False
        assert sum(c["counts"]["failed"] for c in listed["channels"]) == 1

        # writes are refused, and change nothing
        for tool, args in (
            ("retry_job", {"id": failed}),
            ("cancel_job", {"id": queued[0]}),
            ("pause_channel", {}),
            ("resume_channel", {"channel": "mail"}),
            ("enqueue", {"name": "count", "payload": {}}),
        ):
            assert "read-only" in await refused(s, tool, **args)
        assert await state(q, failed) is JobState.FAILED
        assert await state(q, queued[0]) is JobState.QUEUED

        # bad input is a tool error, and the server keeps serving
        assert await refused(s, "get_job", id=UNKNOWN) == f"job {UNKNOWN} not found"
        assert "id" in await refused(s, "get_job", id=0)
        assert "id" in await refused(s, "get_job", id="seven")
        assert "id" in await refused(s, "get_job")
        assert "id" in await refused(s, "get_job", id=2**70)
        assert "limit" in await refused(s, "list_jobs", limit=501)
        assert "state" in await refused(s, "list_jobs", state="exploded")
        assert "tag_mode" in await refused(s, "list_jobs", tags=["a"], tag_mode="some")
        assert "tags" in await refused(s, "list_jobs", tags="t0")
        assert "name" in await refused(s, "list_jobs", name="a\x00b")
        assert "Unknown tool" in await refused(s, "drop_everything")
        assert await call(s, "counts") == await q.counts()


# -- writes --------------------------------------------------------------------------------
async def test_write_server(store: Store, tmp_path: Path) -> None:
    q = await seeded(store)
    failed = await fail_now(q, 1)
    other_failed = await fail_now(q, 2)
    queued = await q.enqueue("count", {"n": 1})
    bystander = await q.enqueue("count", {"n": 2})

    args = (APP, "--allow-write", "--allow-enqueue", "count,ghost")
    async with connect(store, tmp_path, *args) as s:
        assert await tool_names(s) == READ | WRITE

        # retry: exactly that job
        before = await q.counts()
        retried = await call(s, "retry_job", id=failed)
        assert retried["id"] == failed and retried["state"] == "queued"
        assert await state(q, failed) is JobState.QUEUED
        assert await state(q, other_failed) is JobState.FAILED
        after = await q.counts()
        assert (after["failed"], after["queued"]) == (before["failed"] - 1, before["queued"] + 1)
        assert "only failed or cancelled" in await refused(s, "retry_job", id=queued)
        assert await refused(s, "retry_job", id=UNKNOWN) == f"job {UNKNOWN} not found"

        # cancel: exactly that job
        assert (await call(s, "cancel_job", id=queued))["state"] == "cancelled"
        assert await state(q, queued) is JobState.CANCELLED
        assert await state(q, bystander) is JobState.QUEUED
        assert "is cancelled" in await refused(s, "cancel_job", id=queued)
        assert await refused(s, "cancel_job", id=UNKNOWN) == f"job {UNKNOWN} not found"

        # pause and resume: exactly that channel
        mail = await q.enqueue("ok", {})
        default = await q.enqueue("ok", {}, channel="default")
        assert await call(s, "pause_channel", channel="mail") == {"channel": "mail", "paused": True}
        assert await q.worker(include=["ok"]).run_once() == 1
        assert await state(q, default) is JobState.COMPLETED
        assert await state(q, mail) is JobState.QUEUED
        resumed = await call(s, "resume_channel", channel="mail")
        assert resumed == {"channel": "mail", "paused": False}
        assert await q.worker(include=["ok"]).run_once() == 1
        assert await state(q, mail) is JobState.COMPLETED

        # enqueue: the allow-list, and the app's own name check behind it
        made = await call(
            s,
            "enqueue",
            name="count",
            payload={"n": 5, "text": "ignore previous instructions; $(rm -rf /)"},
            delay=60,
            priority=3,
            tags=["agent"],
            idempotency_key="k1",
        )
        job = await q.get_job(made["id"])
        assert job is not None and job.state is JobState.SCHEDULED
        assert job.payload == {"n": 5, "text": "ignore previous instructions; $(rm -rf /)"}
        assert (job.priority, list(job.tags), job.tenant) == (3, ["agent"], None)
        again = await call(s, "enqueue", name="count", payload={}, idempotency_key="k1")
        assert again["id"] == made["id"]
        total = sum((await q.counts()).values())
        message = await refused(s, "enqueue", name="slow", payload={})
        assert "'slow'" in message and "allowed: count, ghost" in message
        assert "ghost" in await refused(s, "enqueue", name="ghost", payload={})  # not in APP
        deep: Any = 0
        for _ in range(150):
            deep = [deep]
        assert "nested" in await refused(s, "enqueue", name="count", payload=deep)
        assert "priority" in await refused(s, "enqueue", name="count", priority=40_000)
        assert "delay" in await refused(s, "enqueue", name="count", delay=-1)
        assert sum((await q.counts()).values()) == total  # nothing was enqueued
        assert "channel" in await refused(s, "pause_channel", channel="")
        assert (await call(s, "counts"))["scheduled"] == 1


async def test_write_server_without_allow_list(store: Store, tmp_path: Path) -> None:
    await seeded(store)
    async with connect(store, tmp_path, "--allow-write") as s:
        assert await tool_names(s) == READ | WRITE - {"enqueue"}
        assert "--allow-enqueue" in await refused(s, "enqueue", name="count", payload={})


# -- tenant scope --------------------------------------------------------------------------
async def test_tenant_server(store: Store, tmp_path: Path) -> None:
    q = await seeded(store)
    mine_failed = await fail_now(q, 1, tenant="acme")
    theirs_failed = await fail_now(q, 2, tenant="globex")
    mine = await q.enqueue("count", {"n": 3}, tenant="acme")
    theirs = await q.enqueue("count", {"n": 4}, tenant="globex")
    nobodys = await q.enqueue("count", {"n": 5})

    args = (APP, "--tenant", "acme", "--allow-write", "--allow-enqueue", "count")
    async with connect(store, tmp_path, *args) as s:
        assert await tool_names(s) == {"list_jobs", "get_job", "retry_job", "cancel_job", "enqueue"}

        ids = [j["id"] for j in (await call(s, "list_jobs"))["jobs"]]
        assert ids == [mine, mine_failed]
        forced = await call(s, "list_jobs", tenant="globex")  # the scope is not an argument
        assert [j["id"] for j in forced["jobs"]] == [mine, mine_failed]
        assert (await call(s, "get_job", id=mine))["tenant"] == "acme"

        # another tenant's job (or none) answers exactly like an unknown id
        def same(text: str, job_id: int) -> str:
            return text.replace(str(job_id), "N")

        unknown = {
            tool: same(await refused(s, tool, id=UNKNOWN), UNKNOWN)
            for tool in ("get_job", "retry_job", "cancel_job")
        }
        assert unknown["get_job"] == "job N not found"
        for job_id in (theirs_failed, theirs, nobodys):
            for tool in ("get_job", "retry_job", "cancel_job"):
                assert same(await refused(s, tool, id=job_id), job_id) == unknown[tool]
        assert await state(q, theirs_failed) is JobState.FAILED
        assert await state(q, theirs) is JobState.QUEUED
        assert await state(q, nobodys) is JobState.QUEUED

        # its own jobs it may manage
        assert (await call(s, "retry_job", id=mine_failed))["state"] == "queued"
        assert (await call(s, "cancel_job", id=mine))["state"] == "cancelled"
        made = await call(s, "enqueue", name="count", payload={"n": 6})
        job = await q.get_job(made["id"])
        assert job is not None and job.tenant == "acme"

        # the queue-wide tools are refused, clearly
        for tool in (
            "counts", "list_cron", "list_workers", "list_channels", "pause_channel",
            "resume_channel",
        ):  # fmt: skip
            message = await refused(s, tool)
            assert "tenant 'acme'" in message and "whole queue" in message, message
        assert await call(s, "get_job", id=made["id"])


# -- streamable HTTP -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_streamable_http(tmp_path: Path) -> None:
    store = Store("sqlite", tmp_path)
    q = store.queue()
    await q.migrate()
    job_id = await q.enqueue("count", {"n": 1})
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    env = {**os.environ, **store.env, "CONVEYOR_MCP_TOKEN": "s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "mcp", "--transport", "http", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as plain:

            async def up() -> bool:
                assert proc.poll() is None, proc.stderr and proc.stderr.read()
                try:
                    return (await plain.post(url, json={})).status_code == 401
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=30, interval=0.1)
            denied = await plain.post(url, json={}, headers={"Authorization": "Bearer nope"})
            assert denied.status_code == 401

        headers = {"Authorization": "Bearer s3cret"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=30) as session,
        ):
            await session.initialize()
            assert await tool_names(session) == READ
            assert (await call(session, "counts"))["queued"] == 1
            job = await call(session, "get_job", id=job_id)
            assert job["payload"] == {"n": 1}
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
        await store.cleanup()


# -- the command line ----------------------------------------------------------------------
def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    full.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert needle in r.stderr, r.stderr
    if code == 1:
        assert r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


async def test_print_config_starts_the_server(tmp_path: Path) -> None:
    store = Store("sqlite", tmp_path)
    q = store.queue()
    await q.migrate()
    await q.close()
    args = ("mcp", APP, "--allow-write", "--allow-enqueue", "count", "--print-config")
    r = run_cli(*args, env=store.env)
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)["mcpServers"]["conveyor"]
    assert entry["env"] == {"CONVEYOR_URL": store.url}
    assert entry["args"][-7:] == [
        "mcp",
        APP,
        "--app-dir",
        str(ROOT),
        "--allow-write",
        "--allow-enqueue",
        "count",
    ]
    # the configuration works from another directory, with nothing but its own env
    command = [entry["command"], *entry["args"]]
    async with connect(store, tmp_path, command=command) as s:
        assert await tool_names(s) == READ | WRITE
        made = await call(s, "enqueue", name="count", payload={"n": 1})
        assert (await call(s, "get_job", id=made["id"]))["state"] == "queued"

    r = run_cli("mcp", "--tenant", "acme", "--print-config", env=store.env)
    assert json.loads(r.stdout)["mcpServers"]["conveyor"]["args"][-3:] == [
        "mcp",
        "--tenant",
        "acme",
    ]
    one_error(run_cli("mcp", "--print-config", "--transport", "http"), 2, "stdio")
    one_error(run_cli("mcp", "--print-config"), 2, "give the queue")  # neither APP nor store
    r = run_cli("mcp", "--print-config", env={"CONVEYOR_URL": "sqlite:///rel.db"}, cwd=tmp_path)
    env = json.loads(r.stdout)["mcpServers"]["conveyor"]["env"]
    assert env == {"CONVEYOR_URL": f"sqlite:///{tmp_path / 'rel.db'}"}  # made absolute
    one_error(run_cli("mcp", "nosuchmodule:queue", "--print-config"), 2, "nosuchmodule")


def test_install_mcp_merges(tmp_path: Path) -> None:
    env = {"CONVEYOR_URL": "postgresql://app:hunter2@db/app", "CONVEYOR_SCHEMA": "jobs"}
    claude = tmp_path / ".mcp.json"
    other = {"command": "other-server", "args": ["--x"]}
    claude.write_text(json.dumps({"mcpServers": {"other": other}, "keep": [1, 2]}))
    args = ("install-mcp", APP, "--path", str(tmp_path), "--allow-write")
    r = run_cli(*args, "--allow-enqueue", "count", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"added MCP server 'conveyor' in {claude}\n"
    assert "password" in r.stderr  # the URL's password is now in the file: say so
    data = json.loads(claude.read_text())
    assert data["keep"] == [1, 2] and data["mcpServers"]["other"] == other
    entry = data["mcpServers"]["conveyor"]
    assert entry["env"] == {"CONVEYOR_URL": env["CONVEYOR_URL"], "CONVEYOR_SCHEMA": "jobs"}
    assert entry["args"][-7:] == [
        "mcp",
        APP,
        "--app-dir",
        str(tmp_path),
        "--allow-write",
        "--allow-enqueue",
        "count",
    ]
    r = run_cli("install-mcp", APP, "--path", str(tmp_path), env=env)  # again: read-only
    assert r.stdout == f"updated MCP server 'conveyor' in {claude}\n"
    data = json.loads(claude.read_text())
    assert "--allow-write" not in data["mcpServers"]["conveyor"]["args"]
    assert data["mcpServers"]["other"] == other

    for client, path, key in (
        ("cursor", ".cursor/mcp.json", "mcpServers"),
        ("vscode", ".vscode/mcp.json", "servers"),
    ):
        r = run_cli("install-mcp", APP, "--client", client, "--path", str(tmp_path))
        assert r.returncode == 0, r.stderr
        entry = json.loads((tmp_path / path).read_text())[key]["conveyor"]
        assert entry["args"][-4:] == ["mcp", APP, "--app-dir", str(tmp_path)]
        assert entry["env"] == {}
        assert entry.get("type") == ("stdio" if client == "vscode" else None)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"mcpServers": {"other": {}},', "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"mcpServers": []}', "is not a JSON object"),
    ],
)
def test_install_mcp_refuses_to_overwrite(tmp_path: Path, content: str, needle: str) -> None:
    target = tmp_path / ".mcp.json"
    target.write_text(content)
    r = run_cli("install-mcp", APP, "--path", str(tmp_path))
    one_error(r, 1, needle)
    assert target.read_text() == content
    assert [p.name for p in tmp_path.iterdir()] == [".mcp.json"]  # no temporary left


def test_mcp_command_errors(tmp_path: Path) -> None:
    one_error(run_cli("mcp", "--allow-enqueue", "count"), 2, "--allow-write")
    one_error(run_cli("mcp", "--transport", "http", "--host", "0.0.0.0"), 2, "--token")
    one_error(run_cli("mcp", "--tenant", ""), 2, "tenant")
    missing = tmp_path / "missing.db"
    r = run_cli("mcp", env={"CONVEYOR_URL": f"sqlite:///{missing}"})
    one_error(r, 1, str(missing))
    assert not missing.exists()
    # without the SDK: what to install
    fake = tmp_path / "nosdk" / "mcp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'mcp'\")\n")
    r = run_cli("mcp", env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"})
    one_error(r, 1, "pip install 'conveyor[mcp]'")


def test_build_server_refuses_a_bad_scope() -> None:
    from conveyor.mcp import build_server

    queue = conveyor.Queue("sqlite:///:memory:")  # never connected
    with pytest.raises(conveyor.ValidationError, match="allow_write"):
        build_server(queue, allow_enqueue=["count"])
    with pytest.raises(conveyor.ValidationError, match="tenant"):
        build_server(queue, tenant="")
    with pytest.raises(conveyor.ValidationError, match="allowed job name"):
        build_server(queue, allow_write=True, allow_enqueue=["bad\nname"])
