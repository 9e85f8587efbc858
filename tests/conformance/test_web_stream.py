"""The status stream for browsers on every backend: ``GET {status_path}/{id}/stream``
(Server-Sent Events) and the ``conveyor.js`` module that reads it.

httpx's ASGI transport hands a response over only once the app has finished it, so the
tests that read events while they happen serve the app with uvicorn on a free port, in a
thread, on a queue of its own (as a web process beside the workers would be).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message

import conveyor
from conveyor.web import Principal, create_app
from conveyor.web import stream as web_stream
from tests.conformance._util import running
from tests.conftest import Store, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {
    "Bearer acme": Principal(tenant="acme"),
    "Bearer globex": Principal(tenant="globex"),
    "Bearer admin": Principal(admin=True),
}
ACME = {"Authorization": "Bearer acme"}
GLOBEX = {"Authorization": "Bearer globex"}
ADMIN = {"Authorization": "Bearer admin"}
FAST = 0.02  # seconds between the stream's reads of the job, in these tests
Event = tuple[str, Any]


def authenticate(request: Any) -> Principal | None:
    return TOKENS.get(request.headers.get("authorization", ""))


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def parse_events(text: str) -> list[Event]:
    """Every event of a whole stream body, as ``(name, data)``; comments as
    ``(":", text)``."""
    events: list[Event] = []
    for block in text.split("\n\n"):
        events += _block(block.split("\n"))
    return events


def _block(lines: list[str]) -> list[Event]:
    name, data, out = "message", [], []
    for line in lines:
        if line.startswith(":"):
            out.append((":", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if data:
        out.append((name, json.loads("\n".join(data))))
    return out


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streamed response, as they arrive."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
            continue
        for event in _block(lines):
            yield event
        lines = []


@asynccontextmanager
async def served(app: Any, web_queue: conveyor.Queue) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free local port; its base URL. The
    web queue is closed on the server's own loop when it stops."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await web_queue.close()

    wrapped = Starlette(routes=[Mount("/", app)], lifespan=lifespan)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(wrapped, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        await wait_for(lambda: server.started or not thread.is_alive(), 15)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)
        sock.close()


def register_build(queue: conveyor.Queue, release: asyncio.Event) -> None:
    @queue.job("build", channel="reports")
    async def build(payload: Any, ctx: conveyor.Context) -> dict[str, int]:
        await ctx.set_progress(40)
        await release.wait()
        return {"rows": 3}


# -- what the stream sends ------------------------------------------------------------------
async def test_the_stream_pushes_progress_and_ends_with_done(
    queue: conveyor.Queue, store: Store
) -> None:
    release = asyncio.Event()
    register_build(queue, release)
    job_id = await queue.enqueue("build", tenant="acme")
    web = store.queue()  # the web process's own queue: it sees the worker through the store
    app = create_app(web, authenticate=authenticate, stream_interval=FAST)
    seen: list[Event] = []
    async with served(app, web) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        url = f"/api/jobs/{job_id}/stream"
        async with client.stream("GET", url, headers=ACME) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-content-type-options"] == "nosniff"
            events = read_events(response)
            seen.append(await anext(events))
            assert seen[0][0] == "update" and seen[0][1]["state"] == "queued"
            async with running(queue.worker()), asyncio.timeout(30):
                async for event in events:
                    seen.append(event)
                    name, data = event
                    if name == "update" and data["progress"] == 40:
                        assert data["state"] == "running"
                        release.set()  # the handler finishes only once we saw its progress
            assert release.is_set()
        status = (await client.get(f"/api/jobs/{job_id}", headers=ACME)).json()
    names = [name for name, _ in seen]
    assert names[-1] == "done" and names.count("done") == 1  # then the stream ended
    assert seen[-1][1] == status  # the status route's shape, final
    assert status["state"] == "completed" and status["result"] == {"rows": 3}
    updates = [data for name, data in seen if name == "update"]
    assert [u["state"] for u in updates][-1] == "completed"
    assert any(u["state"] == "running" and u["progress"] == 40 for u in updates)
    assert all(a != b for a, b in itertools.pairwise(updates))  # changes only


async def test_the_stream_of_a_job_run_through_the_queue(queue: conveyor.Queue) -> None:
    """Over the ASGI transport too (the body arrives whole): queued, then done."""

    @queue.job("report")
    async def report(payload: Any, ctx: conveyor.Context) -> str:
        return "ok"

    job_id = await queue.enqueue("report", tenant="acme")
    app = create_app(queue, authenticate=authenticate, stream_interval=FAST)
    async with client_for(app) as client:
        watching = asyncio.create_task(client.get(f"/api/jobs/{job_id}/stream", headers=ACME))
        assert await queue.worker().run_once() == 1
        response = await asyncio.wait_for(watching, 30)
        status = (await client.get(f"/api/jobs/{job_id}", headers=ACME)).json()
    events = [e for e in parse_events(response.text) if e[0] != ":"]
    assert events[-1] == ("done", status) and status["state"] == "completed"
    assert events[-2] == ("update", status)
    assert response.text.startswith("retry: ")


async def test_a_finished_job_streams_once_and_ends(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    assert await queue.cancel(job_id)
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        response = await client.get(f"/api/jobs/{job_id}/stream", headers=ACME)
        status = (await client.get(f"/api/jobs/{job_id}", headers=ACME)).json()
    assert status["state"] == "cancelled"
    assert parse_events(response.text) == [("update", status), ("done", status)]


async def test_a_job_deleted_while_watched_ends_the_stream_with_gone(
    queue: conveyor.Queue,
) -> None:
    @queue.job("fleeting", remove_on_complete=True)
    async def fleeting(payload: Any, ctx: conveyor.Context) -> None:
        return None

    job_id = await queue.enqueue("fleeting", tenant="acme")
    app = create_app(queue, authenticate=authenticate, stream_interval=FAST)
    async with client_for(app) as client:
        watching = asyncio.create_task(client.get(f"/api/jobs/{job_id}/stream", headers=ACME))
        assert await queue.worker().run_once() == 1
        response = await asyncio.wait_for(watching, 30)
        unknown = (await client.get(f"/api/jobs/{job_id}", headers=ACME)).json()
    events = parse_events(response.text)
    assert events[0][0] == "update"
    assert events[-1] == ("gone", unknown)
    assert unknown == {"error": {"code": "not_found", "message": "job not found"}}


async def test_admins_stream_any_job(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="globex")
    await queue.cancel(job_id)
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        response = await client.get(f"/api/jobs/{job_id}/stream", headers=ADMIN)
    assert [name for name, _ in parse_events(response.text)] == ["update", "done"]


# -- who may watch --------------------------------------------------------------------------
async def test_another_tenants_job_is_the_same_404_as_an_unknown_id(
    queue: conveyor.Queue,
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    untenanted = await queue.enqueue("report")
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        status = await client.get(f"/api/jobs/{job_id + 1000}", headers=GLOBEX)
        other = await client.get(f"/api/jobs/{job_id}/stream", headers=GLOBEX)
        unknown = await client.get(f"/api/jobs/{job_id + 1000}/stream", headers=GLOBEX)
        nobody = await client.get(f"/api/jobs/{untenanted}/stream", headers=ACME)
        malformed = await client.get("/api/jobs/abc/stream", headers=ACME)
    assert other.status_code == 404
    for r in (unknown, nobody, malformed, status):
        assert (r.status_code, r.json(), r.headers["content-type"]) == (
            other.status_code,
            other.json(),
            other.headers["content-type"],
        )
    assert other.json() == {"error": {"code": "not_found", "message": "job not found"}}


async def test_no_credentials_is_401(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        for headers in ({}, {"Authorization": "Bearer forged"}):
            r = await client.get(f"/api/jobs/{job_id}/stream", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
        r = await client.post(f"/api/jobs/{job_id}/stream", headers=ACME)
        assert r.status_code == 403  # the POST routes are admins' (stream is not an action)


# -- the connection -------------------------------------------------------------------------
class Connection:
    """One request straight into the ASGI app, with a client that can hang up."""

    def __init__(self, path: str, headers: dict[str, str], spec: str) -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.sent: list[Message] = []
        self.hung_up = asyncio.Event()
        self._asked = False

    async def receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
async def test_a_client_that_hangs_up_stops_the_stream(
    queue: conveyor.Queue, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")  # stays queued: no worker
    closed = asyncio.Event()
    watch = web_stream.watch

    async def watched(*args: Any) -> AsyncIterator[bytes]:
        try:
            async for chunk in watch(*args):
                yield chunk
        finally:
            closed.set()

    monkeypatch.setattr(web_stream, "watch", watched)
    monkeypatch.setattr(web_stream, "KEEPALIVE", 0.05)
    app = create_app(queue, authenticate=authenticate, stream_interval=FAST)
    conn = Connection(f"/api/jobs/{job_id}/stream", ACME, spec)
    before = asyncio.all_tasks()
    serving = asyncio.create_task(app(conn.scope, conn.receive, conn.send))
    # Keep-alive comments come while nothing changes.
    await wait_for(lambda: b": keep-alive\n\n" in conn.body())
    assert parse_events(conn.body().decode())[0][0] == "update"
    conn.hung_up.set()
    await asyncio.wait_for(serving, 10)
    assert closed.is_set()  # the generator was closed, not left to the garbage collector
    assert asyncio.all_tasks() - before == set()  # nothing of the stream lives on


# -- conveyor.js ----------------------------------------------------------------------------
async def test_conveyor_js_is_served_as_javascript_with_a_strict_csp(
    queue: conveyor.Queue,
) -> None:
    async with client_for(create_app(queue, authenticate=authenticate)) as client:
        r = await client.get("/api/jobs/conveyor.js")  # no credentials: it holds no data
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "export function watchJob(" in r.text
        assert not re.search(r"\beval\(|new Function\(|innerHTML", r.text)
        again = await client.get(
            "/api/jobs/conveyor.js", headers={"If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        # The dashboard keeps its own strict policy.
        page = await client.get("/dashboard", headers=ADMIN)
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


async def test_conveyor_js_follows_the_status_path(queue: conveyor.Queue) -> None:
    app = create_app(queue, authenticate=authenticate, status_path="/status")
    async with client_for(app) as client:
        assert (await client.get("/status/conveyor.js")).status_code == 200
        assert (await client.get("/api/jobs/conveyor.js")).status_code == 404
    no_status = create_app(queue, authenticate=authenticate, status_path="")
    async with client_for(no_status) as client:
        assert (await client.get("/api/jobs/conveyor.js")).status_code == 404


def test_a_bad_stream_interval_is_refused(queue: conveyor.Queue) -> None:
    for bad in (0, -1, 61, True, "1"):
        with pytest.raises(conveyor.ValidationError, match="stream_interval"):
            create_app(queue, authenticate=authenticate, stream_interval=bad)  # type: ignore[arg-type]


# -- watchJob, run by Node.js against a real server -----------------------------------------
NODE_RUNNER = """
import { watchJob } from "./conveyor.mjs";

// A small EventSource for Node (which has none): enough to exercise the module's use of it.
class TestEventSource {
  static received = 0;  // events read from the stream

  constructor(url) {
    this.listeners = {};
    this.onerror = null;
    this.controller = new AbortController();
    this.run(url).catch(() => this.fail());
  }
  addEventListener(name, fn) { (this.listeners[name] ??= []).push(fn); }
  close() { this.controller.abort(); }
  fail() { if (!this.controller.signal.aborted && this.onerror) this.onerror(new Event("error")); }
  async run(url) {
    const response = await fetch(url, { signal: this.controller.signal });
    if (!response.ok) return this.fail();
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = null;
        for (const line of block.split("\\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          if (line.startsWith("data:")) data = line.slice(5).trim();
        }
        if (data === null) continue;
        TestEventSource.received += 1;
        for (const fn of this.listeners[name] ?? []) fn({ data });
      }
    }
    this.fail();  // the server closed the stream: a real EventSource would reconnect
  }
}

const [base, id, mode] = process.argv.slice(2);
if (mode === "eventsource") globalThis.EventSource = TestEventSource;
const seen = [];
const print = () => console.log(JSON.stringify({ seen, streamed: TestEventSource.received }));
watchJob(id, {
  basePath: base,
  pollInterval: 20,
  onUpdate(status) {
    seen.push(["update", status.state, status.progress]);
    if (seen.length === 1) console.log("first");
  },
  onDone(status) { seen.push(["done", status.state, status.result]); print(); },
  onError(error) { seen.push(["error", error]); print(); },
});
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js must be installed in CI: watchJob is run in it")
        pytest.skip("Node.js is not installed: watchJob is not run")
    return node


@pytest.mark.parametrize("mode", ["eventsource", "polling"])
async def test_watch_job_in_node(
    queue: conveyor.Queue, store: Store, tmp_path: Path, mode: str
) -> None:
    node = _node()
    release = asyncio.Event()
    register_build(queue, release)
    job_id = await queue.enqueue("build", tenant="acme")
    unknown = job_id + 1000
    web = store.queue()
    # Node's fetch sends no cookie: this app takes every caller for tenant acme.
    app = create_app(web, authenticate=lambda r: Principal(tenant="acme"), stream_interval=FAST)
    async with served(app, web) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            (tmp_path / "conveyor.mjs").write_bytes(
                (await client.get("/api/jobs/conveyor.js")).content
            )
        (tmp_path / "runner.mjs").write_text(NODE_RUNNER)

        async def run(job: int) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                node, "runner.mjs", f"{base}/api/jobs", str(job), mode,
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip

        watcher = await run(job_id)
        assert watcher.stdout is not None
        async with asyncio.timeout(30):
            assert await watcher.stdout.readline() == b"first\n"  # watching the queued job
            async with running(queue.worker()):
                release.set()
                out, _ = await watcher.communicate()
        missing = await run(unknown)
        missing_out, _ = await asyncio.wait_for(missing.communicate(), 30)
    watched = json.loads(out)
    seen = watched["seen"]
    if mode == "eventsource":
        assert watched["streamed"] >= 3  # update (queued), …, update (completed), done
    else:
        assert watched["streamed"] == 0
    assert seen[0] == ["update", "queued", 0]
    assert seen[-1] == ["done", "completed", {"rows": 3}]
    assert seen[-2] == ["update", "completed", 100]
    assert json.loads(missing_out)["seen"] == [
        ["error", {"status": 404, "code": "not_found", "message": "job not found"}]
    ]


# -- the example page -----------------------------------------------------------------------
def test_the_example_page_allows_its_own_script_by_hash() -> None:
    page = (ROOT / "examples" / "web_status_page.html").read_text()
    scripts = re.findall(r"<script type=\"module\">(.*?)</script>", page, flags=re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in page  # in its Content-Security-Policy
    assert "watchJob(" in scripts[0] and "textContent" in scripts[0]
    assert "innerHTML" not in page
