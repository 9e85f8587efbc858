"""The dashboard on every backend, through HTTP only: its page and assets, and its JSON API
under ``{dashboard_path}/api/`` (overview, throughput, pause and resume, jobs with
filters and paging, one-job and bulk actions, cron, workers, and the two Server-Sent
Event streams)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import conveyor
from conveyor import JobState
from conveyor.web import Principal, create_app
from tests.conformance._util import running
from tests.conformance.test_web_stream import read_events, served
from tests.conftest import Store, wait_for

TOKENS = {
    "Bearer acme": Principal(tenant="acme"),
    "Bearer admin": Principal(admin=True),
}
ACME = {"Authorization": "Bearer acme"}
ADMIN = {"Authorization": "Bearer admin"}
CROSS_SITE = (
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
)
SAME_ORIGIN = {**ADMIN, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
FAST = 0.02


def authenticate(request: Any) -> Principal | None:
    return TOKENS.get(request.headers.get("authorization", ""))


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def queue(store: Store) -> conveyor.Queue:
    """The suite's queue, taking any job name (as a web process that enqueues for workers
    elsewhere does): the tests enqueue names they register no handler for."""
    q = store.queue(
        lease=2.0, heartbeat_interval=0.5, sweep_interval=0.2, poll_interval=0.2, strict_names=False
    )
    await q.migrate()
    return q


@pytest.fixture
async def client(queue: conveyor.Queue) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def failed(queue: conveyor.Queue, name: str = "boom", **options: Any) -> int:
    """A job of ``name`` that ran once and failed."""
    if name not in queue.definitions:

        @queue.job(name)
        async def boom(payload: Any, ctx: conveyor.Context) -> None:
            raise RuntimeError("kaput")

    job_id = await queue.enqueue(name, {"n": 1}, **options)
    assert await queue.worker(include=[name]).run_once() >= 1
    assert await state(queue, job_id) is JobState.FAILED
    return job_id


async def state(queue: conveyor.Queue, job_id: int) -> JobState | None:
    job = await queue.get_job(job_id)
    return None if job is None else job.state


async def states(queue: conveyor.Queue, ids: list[int]) -> list[JobState | None]:
    return [await state(queue, i) for i in ids]


# -- who may do what ------------------------------------------------------------------------
async def test_every_route_is_admin_only_and_every_change_refuses_cross_site(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await failed(queue, channel="emails")
    queued = await queue.enqueue("report", channel="emails")
    await queue.add_cron("digest", "0 6 * * *", job="report")
    gets = [
        "/dashboard",
        "/dashboard/jobs",
        f"/dashboard/jobs/{job_id}",
        "/dashboard/cron",
        "/dashboard/workers",
        "/dashboard/api/stats",
        "/dashboard/api/overview",
        "/dashboard/api/stream",
        "/dashboard/api/throughput",
        "/dashboard/api/jobs",
        f"/dashboard/api/jobs/{job_id}",
        f"/dashboard/api/jobs/{job_id}/stream",
        "/dashboard/api/bulk?state=failed",
        "/dashboard/api/cron",
        "/dashboard/api/workers",
    ]
    posts: list[tuple[str, Any]] = [
        ("/dashboard/api/pause", None),
        ("/dashboard/api/resume", None),
        ("/dashboard/api/channels/emails/pause", None),
        ("/dashboard/api/channels/emails/resume", None),
        (f"/dashboard/api/jobs/{job_id}/retry", None),
        (f"/dashboard/api/jobs/{queued}/cancel", None),
        (f"/dashboard/api/jobs/{queued}/delete", None),
        ("/dashboard/api/bulk/retry", {"state": "failed"}),
        ("/dashboard/api/bulk/cancel", {}),
        ("/dashboard/api/bulk/delete", {}),
        ("/dashboard/api/cron/digest/pause", None),
        ("/dashboard/api/cron/digest/resume", None),
        ("/dashboard/api/cron/digest/run", None),
    ]
    for headers, status, code in ((ACME, 403, "forbidden"), ({}, 401, "unauthorized")):
        for path in gets:
            assert_error(await client.get(path, headers=headers), status, code)
        for path, body in posts:
            assert_error(await client.post(path, headers=headers, json=body), status, code)
    for cross in CROSS_SITE:
        for path, body in posts:
            r = await client.post(path, headers={**ADMIN, **cross}, json=body)
            assert_error(r, 403, "cross_site")
    # Nothing changed.
    assert await states(queue, [job_id, queued]) == [JobState.FAILED, JobState.QUEUED]
    assert (await queue.pause_state()).channels == () and not (await queue.pause_state()).everything
    assert not (await queue.list_cron())[0].paused
    assert await queue.counts() == {
        **dict.fromkeys(await queue.counts(), 0),
        "failed": 1,
        "queued": 1,
    }
    # The browser's own same-origin POST goes through.
    r = await client.post("/dashboard/api/channels/emails/pause", headers=SAME_ORIGIN)
    assert r.status_code == 200 and r.json()["paused"]["channels"] == ["emails"]


async def test_a_dormant_queue_answers_503_after_the_credential_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    queue = conveyor.Queue.from_env()
    assert queue.dormant
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        for path in ("/dashboard", "/dashboard/api/overview", "/dashboard/api/workers"):
            assert_error(await c.get(path), 401, "unauthorized")
            assert_error(await c.get(path, headers=ADMIN), 503, "dormant")
        assert_error(await c.post("/dashboard/api/pause", headers=ADMIN), 503, "dormant")
        assert (await c.get("/dashboard/assets/dashboard.js")).status_code == 200


# -- the page and its assets ----------------------------------------------------------------
async def test_every_view_is_the_same_page_and_its_assets_are_pinned_by_the_csp(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    page = await client.get("/dashboard", headers=ADMIN)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in ("/dashboard/jobs?state=failed", "/dashboard/jobs/42", "/dashboard/cron",
                 "/dashboard/workers"):  # fmt: skip
        r = await client.get(path, headers=ADMIN)
        assert r.status_code == 200 and r.text == page.text, path
    assert_error(await client.get("/dashboard/jobs/x1", headers=ADMIN), 404, "not_found")
    assert 'data-base="/dashboard"' in page.text and 'data-api="/dashboard/api"' in page.text
    assert "<style" not in page.text and not re.search(r"<script>|\son\w+=", page.text)

    js = await client.get("/dashboard/assets/dashboard.js")  # code, no data: no credentials
    css = await client.get("/dashboard/assets/dashboard.css")
    assert js.status_code == 200 and js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    for r in (js, css):
        assert r.headers["x-content-type-options"] == "nosniff"
        again = await client.get(r.url.path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert (await client.get("/dashboard/assets/other.js")).status_code == 404
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):  # fmt: skip
        assert sink not in js.text

    sri = "sha256-" + base64.b64encode(hashlib.sha256(js.content).digest()).decode()
    assert f'integrity="{sri}"' in page.text
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == (f"'{sri}' http://testserver/dashboard/assets/dashboard.js")
    assert directives["style-src"] == "http://testserver/dashboard/assets/dashboard.css"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    # A Host that a CSP cannot name (an IPv6 literal) falls back to 'self'.
    r = await client.get("/dashboard", headers={**ADMIN, "Host": "[::1]:8000"})
    assert "script-src 'sha256-" in r.headers["content-security-policy"]
    assert "'self'" in r.headers["content-security-policy"]


async def test_mounted_under_a_prefix_every_path_follows(queue: conveyor.Queue) -> None:
    parent = Starlette(routes=[Mount("/ops", create_app(queue, authenticate=authenticate))])
    async with client_for(parent) as c:
        page = await c.get("/ops/dashboard/jobs/7", headers=ADMIN)
        assert 'data-base="/ops/dashboard"' in page.text
        assert 'src="/ops/dashboard/assets/dashboard.js"' in page.text
        assert (
            "http://testserver/ops/dashboard/assets/dashboard.js"
            in page.headers["content-security-policy"]
        )
        assert (await c.get("/ops/dashboard/assets/dashboard.css")).status_code == 200
        assert (await c.get("/ops/dashboard/api/overview", headers=ADMIN)).status_code == 200


# -- overview, throughput, pause --------------------------------------------------------------
async def test_overview_has_live_counts_channels_and_pause_state(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    for _ in range(2):
        await queue.enqueue("send", channel="emails")
    await queue.enqueue("report", channel="reports", delay=3600)
    await failed(queue, channel="billing")
    body = (await client.get("/dashboard/api/overview", headers=ADMIN)).json()
    assert body["counts"]["queued"] == 2 and body["counts"]["failed"] == 1
    assert body["counts"]["scheduled"] == 1
    channels = {c["name"]: c for c in body["channels"]}
    assert set(channels) == {"billing", "emails", "reports"}
    assert channels["emails"]["counts"]["queued"] == 2 and not channels["emails"]["paused"]
    assert channels["emails"]["oldest_queued_age"] >= 0
    assert channels["emails"]["oldest_queued_at"] is not None
    assert channels["reports"]["oldest_queued_at"] is None
    assert body["paused"] == {"everything": False, "channels": []}
    assert body["workers"] == {"count": 0, "busy": 0, "concurrency": 0}
    assert channels["emails"]["limits"] is None
    await queue.set_channel_limits(
        "emails", concurrency=5, rate=conveyor.Rate(100, "1m"), fair_by="tenant"
    )
    body = (await client.get("/dashboard/api/overview", headers=ADMIN)).json()
    assert {c["name"]: c["limits"] for c in body["channels"]}["emails"] == {
        "concurrency": 5,
        "rate": {"n": 100, "per": 60.0},
        "fair_by": "tenant",
    }

    r = await client.post("/dashboard/api/channels/emails/pause", headers=ADMIN)
    assert r.json() == {
        "channel": "emails",
        "paused": {"everything": False, "channels": ["emails"]},
    }
    body = (await client.get("/dashboard/api/overview", headers=ADMIN)).json()
    assert {c["name"]: c["paused"] for c in body["channels"]} == {
        "billing": False, "emails": True, "reports": False,
    }  # fmt: skip
    r = await client.post("/dashboard/api/channels/emails/resume", headers=ADMIN)
    assert r.json()["paused"]["channels"] == []
    assert (await queue.pause_state()).channels == ()

    r = await client.post("/dashboard/api/pause", headers=ADMIN)
    assert r.json() == {"paused": {"everything": True, "channels": []}}
    assert (await queue.pause_state()).everything
    body = (await client.get("/dashboard/api/overview", headers=ADMIN)).json()
    assert all(c["paused"] for c in body["channels"])
    r = await client.post("/dashboard/api/resume", headers=ADMIN)
    assert r.json() == {"paused": {"everything": False, "channels": []}}
    # A channel name with a slash and spaces travels in the path, encoded.
    r = await client.post("/dashboard/api/channels/eu%2Fmail%20out/pause", headers=ADMIN)
    assert r.json()["paused"]["channels"] == ["eu/mail out"]
    assert_error(
        await client.post("/dashboard/api/channels/emails/explode", headers=ADMIN),
        404,
        "not_found",
    )


async def test_throughput_counts_what_finished_per_bucket(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    @queue.job("ok")
    async def ok(payload: Any, ctx: conveyor.Context) -> None:
        return None

    for _ in range(3):
        await queue.enqueue("ok")
    assert await queue.worker(include=["ok"]).run_once() == 3
    await failed(queue)
    cancelled = await queue.enqueue("ok")
    await queue.cancel(cancelled)
    body = (await client.get("/dashboard/api/throughput", headers=ADMIN)).json()
    assert body["window"] == 3600 and body["bucket"] == 60 and len(body["points"]) == 60
    assert body["totals"] == {"completed": 3, "failed": 1, "cancelled": 1}
    assert sum(p["completed"] for p in body["points"]) == 3
    assert set(body["points"][0]) == {"start", "completed", "failed", "cancelled"}
    r = await client.get("/dashboard/api/throughput?window=6h&bucket=5m", headers=ADMIN)
    assert len(r.json()["points"]) == 72
    for query in ("window=soon", "bucket=0", "window=1d&bucket=1s", "window=90d&bucket=1d"):
        assert_error(
            await client.get(f"/dashboard/api/throughput?{query}", headers=ADMIN), 400, "invalid"
        )


# -- jobs ----------------------------------------------------------------------------------------
async def test_job_list_filters_and_cursor_paging(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    emails = [await queue.enqueue("send-email", channel="emails", tenant="acme") for _ in range(5)]
    report = await queue.enqueue("send-report", channel="reports", tags=["q4", "finance"])
    other = await queue.enqueue("build", tags=["q4"], tenant="globex")

    async def ids(query: str) -> list[int]:
        r = await client.get(f"/dashboard/api/jobs?{query}", headers=ADMIN)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["jobs"]]

    assert await ids("prefix=send-") == [report, *reversed(emails)]
    assert await ids("prefix=send-e") == list(reversed(emails))
    assert await ids("name=build") == [other]
    assert await ids("channel=reports") == [report]
    assert await ids("tenant=globex") == [other]
    assert await ids("tag=q4") == [other, report]
    assert await ids("tag=q4&tag=finance&tag_mode=all") == [report]
    assert await ids("state=queued&prefix=send-&channel=emails&tenant=acme") == list(
        reversed(emails)
    )
    assert await ids("state=failed") == []

    first = (await client.get("/dashboard/api/jobs?limit=3", headers=ADMIN)).json()
    assert [j["id"] for j in first["jobs"]] == [other, report, emails[4]]
    assert first["older"] == emails[4]
    second = (
        await client.get(f"/dashboard/api/jobs?limit=3&before={first['older']}", headers=ADMIN)
    ).json()
    assert [j["id"] for j in second["jobs"]] == [emails[3], emails[2], emails[1]]
    last = (
        await client.get(f"/dashboard/api/jobs?limit=3&before={second['older']}", headers=ADMIN)
    ).json()
    assert [j["id"] for j in last["jobs"]] == [emails[0]] and last["older"] is None

    for query in ("state=exploded", "limit=0", "limit=1001", "before=x", "tag_mode=none",
                  "state=failed&state=queued"):  # fmt: skip
        assert_error(
            await client.get(f"/dashboard/api/jobs?{query}", headers=ADMIN), 400, "invalid"
        )


async def test_one_job_retry_cancel_delete(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await failed(queue)
    queued = await queue.enqueue("report")
    r = await client.post(f"/dashboard/api/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    r = await client.post(f"/dashboard/api/jobs/{queued}/cancel", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert_error(
        await client.post(f"/dashboard/api/jobs/{queued}/cancel", headers=ADMIN), 409, "conflict"
    )
    r = await client.post(f"/dashboard/api/jobs/{queued}/delete", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"id": queued, "deleted": True}
    assert await queue.get_job(queued) is None
    assert_error(await client.get(f"/dashboard/api/jobs/{queued}", headers=ADMIN), 404, "not_found")
    assert_error(
        await client.post(f"/dashboard/api/jobs/{queued}/delete", headers=ADMIN), 404, "not_found"
    )
    assert_error(await client.post("/dashboard/api/jobs/x/delete", headers=ADMIN), 404, "not_found")
    assert_error(
        await client.post(f"/dashboard/api/jobs/{job_id}/explode", headers=ADMIN), 404, "not_found"
    )


async def test_a_running_job_is_not_deleted(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    release = asyncio.Event()

    @queue.job("hold")
    async def hold(payload: Any, ctx: conveyor.Context) -> None:
        await release.wait()

    job_id = await queue.enqueue("hold")
    async with running(queue.worker(include=["hold"])):
        await wait_for(lambda: _is(queue, job_id, JobState.RUNNING))
        r = await client.post(f"/dashboard/api/jobs/{job_id}/delete", headers=ADMIN)
        assert_error(r, 409, "conflict")
        preview = (await client.get("/dashboard/api/bulk?name=hold", headers=ADMIN)).json()
        assert (preview["delete"], preview["cancel"], preview["by_state"]["running"]) == (0, 1, 1)
        r = await client.post("/dashboard/api/bulk/delete", headers=ADMIN, json={"name": "hold"})
        assert r.json()["count"] == 0
        release.set()
    assert await state(queue, job_id) is JobState.COMPLETED


async def _is(queue: conveyor.Queue, job_id: int, wanted: JobState) -> bool:
    return await state(queue, job_id) is wanted


# -- bulk actions -------------------------------------------------------------------------------
async def test_bulk_actions_change_exactly_the_filtered_jobs(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    billing = [await failed(queue, "charge", channel="billing") for _ in range(3)]
    email_failed = await failed(queue, "send", channel="emails")
    queued = [await queue.enqueue("charge", channel="billing") for _ in range(2)]
    later = await queue.enqueue("charge-later", channel="billing", delay=3600)
    reports = [await queue.enqueue("report", channel="reports", tags=["q4"]) for _ in range(2)]

    # The preview counts what each action would change, without changing anything.
    r = await client.get("/dashboard/api/bulk?state=failed&channel=billing", headers=ADMIN)
    preview = r.json()
    assert preview["filter"] == {"state": "failed", "channel": "billing"}
    assert (preview["matching"], preview["retry"], preview["cancel"], preview["delete"]) == (
        3,
        3,
        0,
        3,
    )
    assert preview["capped"] is False and preview["by_state"]["failed"] == 3
    r = await client.get("/dashboard/api/bulk?prefix=charge", headers=ADMIN)
    assert (r.json()["matching"], r.json()["retry"], r.json()["cancel"]) == (6, 3, 3)

    r = await client.post(
        "/dashboard/api/bulk/retry", headers=ADMIN, json={"state": "failed", "channel": "billing"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "action": "retry",
        "filter": {"state": "failed", "channel": "billing"},
        "count": 3,
    }
    assert await states(queue, billing) == [JobState.QUEUED] * 3
    assert await state(queue, email_failed) is JobState.FAILED

    r = await client.post("/dashboard/api/bulk/cancel", headers=ADMIN, json={"prefix": "charge-"})
    assert r.json()["count"] == 1
    assert await state(queue, later) is JobState.CANCELLED
    assert await states(queue, queued) == [JobState.QUEUED] * 2

    r = await client.post(
        "/dashboard/api/bulk/cancel", headers=ADMIN, json={"channel": "billing", "state": "queued"}
    )
    assert r.json()["count"] == 5  # the three retried and the two queued
    assert await states(queue, [*billing, *queued]) == [JobState.CANCELLED] * 5
    assert await states(queue, reports) == [JobState.QUEUED] * 2

    r = await client.post(
        "/dashboard/api/bulk/delete",
        headers=ADMIN,
        json={"state": "cancelled", "channel": "billing"},
    )
    assert r.json()["count"] == 6
    assert await states(queue, [*billing, *queued, later]) == [None] * 6
    assert await state(queue, email_failed) is JobState.FAILED

    r = await client.post("/dashboard/api/bulk/delete", headers=ADMIN, json={"tag": ["q4"]})
    assert r.json()["count"] == 2
    assert await queue.counts() == {**dict.fromkeys(await queue.counts(), 0), "failed": 1}
    r = await client.post("/dashboard/api/bulk/retry", headers=ADMIN, json={"state": "queued"})
    assert r.json()["count"] == 0  # nothing queued can be retried


async def test_bulk_actions_refuse_a_bad_filter_and_change_nothing(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report")
    for body in ({"stat": "queued"}, {"state": "exploded"}, {"channel": 3}, [], "queued",
                 {"tag": [1]}):  # fmt: skip
        r = await client.post("/dashboard/api/bulk/cancel", headers=ADMIN, json=body)
        assert_error(r, 400, "invalid")
    r = await client.post("/dashboard/api/bulk/cancel", headers=ADMIN, content=b"{nope")
    assert_error(r, 400, "invalid")
    r = await client.post(
        "/dashboard/api/bulk/cancel",
        headers={**ADMIN, "Content-Type": "text/plain"},
        content=b"{}",
    )
    assert_error(r, 400, "invalid")
    assert_error(
        await client.post("/dashboard/api/bulk/explode", headers=ADMIN, json={}), 404, "not_found"
    )
    assert_error(
        await client.get("/dashboard/api/bulk?state=exploded", headers=ADMIN), 400, "invalid"
    )
    assert await state(queue, job_id) is JobState.QUEUED


# -- cron and workers ---------------------------------------------------------------------------
async def test_cron_schedules_pause_resume_and_run_now(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    await queue.add_cron("digest", "0 6 * * *", job="report", timezone="Europe/Amsterdam")
    await queue.add_cron("eu/nightly run", "0 2 * * *", job="report")
    body = (await client.get("/dashboard/api/cron", headers=ADMIN)).json()
    schedules = {s["name"]: s for s in body["schedules"]}
    assert set(schedules) == {"digest", "eu/nightly run"}
    digest = schedules["digest"]
    assert (digest["expression"], digest["job"], digest["timezone"]) == (
        "0 6 * * *",
        "report",
        "Europe/Amsterdam",
    )
    assert (
        digest["next_run_at"] is not None and digest["last_run_at"] is None and not digest["paused"]
    )

    r = await client.post("/dashboard/api/cron/digest/pause", headers=ADMIN)
    assert r.status_code == 200 and r.json()["schedule"]["paused"] is True
    assert [s.paused for s in await queue.list_cron() if s.name == "digest"] == [True]
    r = await client.post("/dashboard/api/cron/digest/resume", headers=ADMIN)
    assert r.json()["schedule"]["paused"] is False

    r = await client.post("/dashboard/api/cron/eu%2Fnightly%20run/run", headers=ADMIN)
    assert r.status_code == 200 and r.json()["name"] == "eu/nightly run"
    job = await queue.get_job(r.json()["job_id"])
    assert job is not None and job.name == "report" and job.state is JobState.QUEUED

    assert_error(await client.post("/dashboard/api/cron/nope/run", headers=ADMIN), 404, "not_found")
    assert_error(
        await client.post("/dashboard/api/cron/digest/explode", headers=ADMIN), 404, "not_found"
    )


async def test_workers_with_their_running_jobs(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    release = asyncio.Event()

    @queue.job("hold", channel="slow")
    async def hold(payload: Any, ctx: conveyor.Context) -> None:
        await release.wait()

    job_id = await queue.enqueue("hold")
    assert (await client.get("/dashboard/api/workers", headers=ADMIN)).json()["workers"] == []
    async with running(queue.worker(channels=["slow"], concurrency=4)):

        async def listed() -> dict[str, Any] | None:
            found = (await client.get("/dashboard/api/workers", headers=ADMIN)).json()["workers"]
            return found[0] if found and found[0]["running"] == [job_id] else None

        worker = await wait_for(listed, 15)
        assert worker["channels"] == ["slow"] and worker["concurrency"] == 4
        assert worker["busy"] == 1 and isinstance(worker["pid"], int) and worker["host"]
        assert worker["started_at"] and worker["last_seen"] and worker["id"]
        overview = (await client.get("/dashboard/api/overview", headers=ADMIN)).json()
        assert overview["workers"] == {"count": 1, "busy": 1, "concurrency": 4}
        release.set()
    assert await state(queue, job_id) is JobState.COMPLETED


# -- the streams ----------------------------------------------------------------------------------
async def test_the_overview_stream_sends_an_update_when_the_store_changes(
    queue: conveyor.Queue, store: Store
) -> None:
    web = store.queue()
    app = create_app(web, authenticate=authenticate, stream_interval=FAST)
    async with (
        served(app, web) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        client.stream("GET", "/dashboard/api/stream", headers=ADMIN) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = read_events(response)
        name, first = await anext(events)
        assert name == "overview" and first["counts"]["queued"] == 0
        await queue.enqueue("report", channel="emails")
        async with asyncio.timeout(15):
            name, data = await anext(events)
        assert name == "overview" and data["counts"]["queued"] == 1
        assert [c["name"] for c in data["channels"]] == ["emails"]
        await queue.pause("emails")
        async with asyncio.timeout(15):
            name, data = await anext(events)
        assert data["paused"]["channels"] == ["emails"] and data["channels"][0]["paused"]


async def test_the_job_stream_follows_the_job_until_it_is_deleted(
    queue: conveyor.Queue, store: Store
) -> None:
    release = asyncio.Event()

    @queue.job("build")
    async def build(payload: Any, ctx: conveyor.Context) -> dict[str, int]:
        await ctx.set_progress(40)
        ctx.log.info("halfway")
        await release.wait()
        return {"rows": 3}

    job_id = await queue.enqueue("build", {"month": 11})
    web = store.queue()
    app = create_app(web, authenticate=authenticate, stream_interval=FAST)
    async with served(app, web) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.get("/dashboard/api/jobs/99999/stream", headers=ADMIN)
        assert_error(r, 404, "not_found")
        url = f"/dashboard/api/jobs/{job_id}/stream"
        async with client.stream("GET", url, headers=ADMIN) as response:
            assert response.status_code == 200
            events = read_events(response)
            name, first = await anext(events)
            assert (
                name == "job" and first["state"] == "queued" and first["payload"] == {"month": 11}
            )
            assert first["events"][0]["type"] == "enqueued" and first["logs"] == []
            seen: list[dict[str, Any]] = []
            async with running(queue.worker(include=["build"])), asyncio.timeout(30):
                async for name, data in events:
                    if name == ":":
                        continue  # a keep-alive
                    assert name == "job"
                    seen.append(data)
                    if data["progress"] == 40:
                        release.set()  # it finishes only once the stream showed its progress
                    if data["state"] == "completed":
                        break
            assert any(d["state"] == "running" and d["progress"] == 40 for d in seen)
            assert seen[-1]["result"] == {"rows": 3}
            assert seen[-1]["logs"][0]["message"] == "halfway"
            assert await queue.delete(job_id)
            async with asyncio.timeout(15):
                name, data = await anext(events)
            assert name == "gone" and data["error"]["code"] == "not_found"
