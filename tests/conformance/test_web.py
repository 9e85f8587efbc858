"""The web layer (status API, dashboard, metrics) on every backend, through HTTP only."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import conveyor
from conveyor import JobState
from conveyor.web import Principal, create_app
from tests.conftest import require_backend

TOKENS = {
    "Bearer acme": Principal(tenant="acme"),
    "Bearer globex": Principal(tenant="globex"),
    "Bearer nobody": Principal(),  # authenticated, but no tenant
    "Bearer admin": Principal(admin=True),
}
ACME = {"Authorization": "Bearer acme"}
GLOBEX = {"Authorization": "Bearer globex"}
NOBODY = {"Authorization": "Bearer nobody"}
ADMIN = {"Authorization": "Bearer admin"}
BAD = {"Authorization": "Bearer forged"}
STATUS_KEYS = {
    "id",
    "name",
    "state",
    "attempts",
    "stalls",
    "max_attempts",
    "progress",
    "result",
    "last_error",
    "created_at",
    "started_at",
    "finished_at",
    "tags",
}
XSS = "<script>alert(1)</script>"


def authenticate(request: Any) -> Principal | None:
    return TOKENS.get(request.headers.get("authorization", ""))


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(queue: conveyor.Queue) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        yield c


def samples(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition: ``'name{labels}'`` -> value (which
    prometheus-client writes as a float: ``1.0``)."""
    pairs = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {key: float(value) for key, _, value in pairs if key}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def failed_job(queue: conveyor.Queue, tenant: str | None = "acme") -> int:
    """A job that ran once and failed (its handler raises)."""

    @queue.job("boom")
    async def boom(payload: Any, ctx: conveyor.Context) -> None:
        ctx.log.info("about to fail")
        raise RuntimeError("kaput")

    job_id = await queue.enqueue("boom", {"n": 1}, tenant=tenant)
    assert await queue.worker(include=["boom"]).run_once() == 1
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    return job_id


async def state(queue: conveyor.Queue, job_id: int) -> JobState:
    job = await queue.get_job(job_id)
    assert job is not None
    return job.state


# -- status API -----------------------------------------------------------------------------
async def test_status_answers_the_callers_own_job(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report", {"x": 1}, tenant="acme", tags=["t1"], attempts=3)
    r = await client.get(f"/api/jobs/{job_id}", headers=ACME)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == STATUS_KEYS
    assert body["id"] == job_id and body["name"] == "report" and body["state"] == "queued"
    assert (body["attempts"], body["max_attempts"], body["progress"]) == (0, 3, 0)
    assert body["result"] is None and body["last_error"] is None and body["tags"] == ["t1"]
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["started_at"] is None and body["finished_at"] is None


async def test_another_tenants_job_is_the_same_404_as_an_unknown_id(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    untenanted = await queue.enqueue("report")
    other = await client.get(f"/api/jobs/{job_id}", headers=GLOBEX)
    unknown = await client.get(f"/api/jobs/{job_id + 1000}", headers=GLOBEX)
    assert_error(other, 404, "not_found")
    assert (other.status_code, other.json()) == (unknown.status_code, unknown.json())
    assert other.headers["content-type"] == unknown.headers["content-type"]
    for raw in ("abc", "-1", "1.0", "9" * 30, "%20"):
        r = await client.get(f"/api/jobs/{raw}", headers=ACME)
        assert (r.status_code, r.json()) == (404, other.json()), raw
    # A principal without a tenant reads no job, not even an untenanted one.
    r = await client.get(f"/api/jobs/{untenanted}", headers=NOBODY)
    assert (r.status_code, r.json()) == (404, other.json())
    r = await client.get(f"/api/jobs/{untenanted}", headers=ACME)
    assert (r.status_code, r.json()) == (404, other.json())


async def test_another_tenants_job_is_refused_by_the_store_without_loading_it(
    queue: conveyor.Queue, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status route asks the store for the caller's tenant's job only, so another
    tenant's (large) payload is never loaded just to answer 404."""
    job_id = await queue.enqueue("report", {"blob": "x" * 500_000}, tenant="acme")
    asked: list[tuple[int, str | None]] = []
    get_job = queue.get_job

    async def spy(job_id: int, *, tenant: str | None = None) -> conveyor.Job | None:
        asked.append((job_id, tenant))
        return await get_job(job_id, tenant=tenant)

    monkeypatch.setattr(queue, "get_job", spy)
    assert_error(await client.get(f"/api/jobs/{job_id}", headers=GLOBEX), 404, "not_found")
    assert (await client.get(f"/api/jobs/{job_id}", headers=ACME)).status_code == 200
    assert asked == [(job_id, "globex"), (job_id, "acme")]
    assert await get_job(job_id, tenant="globex") is None


async def test_admins_read_any_tenants_job(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    r = await client.get(f"/api/jobs/{job_id}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["id"] == job_id


async def test_no_or_bad_credentials_are_401_before_any_lookup(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    for headers in ({}, BAD):
        assert_error(await client.get(f"/api/jobs/{job_id}", headers=headers), 401, "unauthorized")
        assert_error(await client.get("/api/jobs/424242", headers=headers), 401, "unauthorized")
        assert_error(await client.get("/api/jobs/nope", headers=headers), 401, "unauthorized")


async def test_async_authenticate_is_awaited(queue: conveyor.Queue) -> None:
    async def auth(request: Any) -> Principal | None:
        return authenticate(request)

    job_id = await queue.enqueue("report", tenant="acme")
    async with client_for(create_app(queue, authenticate=auth)) as c:
        assert (await c.get(f"/api/jobs/{job_id}", headers=ACME)).status_code == 200
        assert_error(await c.get(f"/api/jobs/{job_id}", headers=GLOBEX), 404, "not_found")
        assert_error(await c.get(f"/api/jobs/{job_id}"), 401, "unauthorized")


async def test_status_of_a_failed_job_shows_the_error_without_traceback(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await failed_job(queue)
    body = (await client.get(f"/api/jobs/{job_id}", headers=ACME)).json()
    assert body["state"] == "failed" and body["attempts"] == 1
    assert body["last_error"]["type"] == "RuntimeError"
    assert body["last_error"]["message"] == "kaput"
    assert "traceback" not in body["last_error"]
    assert body["finished_at"] is not None


async def test_retry_and_cancel_happy_paths(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await failed_job(queue)
    r = await client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert await state(queue, job_id) is JobState.QUEUED
    r = await client.post(f"/api/jobs/{job_id}/cancel", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert await state(queue, job_id) is JobState.CANCELLED
    # Cancelled jobs can be retried too.
    r = await client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "queued"


async def test_retry_of_a_job_that_did_not_fail_is_409(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    assert_error(await client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN), 409, "conflict")
    assert await state(queue, job_id) is JobState.QUEUED
    assert await queue.cancel(job_id)
    assert_error(await client.post(f"/api/jobs/{job_id}/cancel", headers=ADMIN), 409, "conflict")
    assert_error(await client.post("/api/jobs/999999/retry", headers=ADMIN), 404, "not_found")
    assert_error(await client.post(f"/api/jobs/{job_id}/explode", headers=ADMIN), 404, "not_found")


async def test_actions_need_an_admin(queue: conveyor.Queue, client: httpx.AsyncClient) -> None:
    queued = await queue.enqueue("report", tenant="acme")  # before "boom" is registered
    failed = await failed_job(queue)
    for headers, status, code in ((ACME, 403, "forbidden"), ({}, 401, "unauthorized")):
        r = await client.post(f"/api/jobs/{failed}/retry", headers=headers)
        assert_error(r, status, code)
        r = await client.post(f"/api/jobs/{queued}/cancel", headers=headers)
        assert_error(r, status, code)
    assert await state(queue, failed) is JobState.FAILED
    assert await state(queue, queued) is JobState.QUEUED


@pytest.mark.parametrize(
    "extra",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8080"},
        {"Origin": "https://testserver"},  # same host, another scheme: another origin
        {"Origin": "null"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_cross_site_posts_are_refused_and_change_nothing(
    queue: conveyor.Queue, client: httpx.AsyncClient, extra: dict[str, str]
) -> None:
    queued = await queue.enqueue("report", tenant="acme")  # before "boom" is registered
    failed = await failed_job(queue)
    headers = {**ADMIN, **extra}
    for path in (
        f"/api/jobs/{failed}/retry",
        f"/api/jobs/{queued}/cancel",
        f"/dashboard/api/jobs/{failed}/retry",
        f"/dashboard/api/jobs/{queued}/cancel",
    ):
        assert_error(await client.post(path, headers=headers), 403, "cross_site")
    assert await state(queue, failed) is JobState.FAILED
    assert await state(queue, queued) is JobState.QUEUED


async def test_same_origin_posts_from_a_browser_pass(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    failed = await failed_job(queue)
    headers = {**ADMIN, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    r = await client.post(f"/dashboard/api/jobs/{failed}/retry", headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    # Served over https, the https origin is the same one.
    app = create_app(queue, authenticate=authenticate)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver"
    ) as tls:
        headers = {**ADMIN, "Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"}
        r = await tls.post(f"/dashboard/api/jobs/{failed}/cancel", headers=headers)
        assert r.status_code == 200 and r.json()["state"] == "cancelled"


async def test_empty_status_path_mounts_no_status_route(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    async with client_for(create_app(queue, authenticate=authenticate, status_path="")) as c:
        assert_error(await c.get(f"/api/jobs/{job_id}", headers=ACME), 404, "not_found")
        assert (await c.get("/dashboard/api/stats", headers=ADMIN)).status_code == 200


async def test_status_path_comes_from_the_environment(
    queue: conveyor.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    monkeypatch.setenv("CONVEYOR_STATUS_PATH", "/jobs/v2")
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        r = await c.get(f"/jobs/v2/{job_id}", headers=ACME)
        assert r.status_code == 200 and r.json()["id"] == job_id
        assert_error(await c.get(f"/api/jobs/{job_id}", headers=ACME), 404, "not_found")
    # an explicit argument wins over the environment
    async with client_for(create_app(queue, authenticate=authenticate, status_path="/s")) as c:
        assert (await c.get(f"/s/{job_id}", headers=ACME)).status_code == 200


async def test_unknown_routes_and_methods_get_error_bodies(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nothing/here", headers=ADMIN), 404, "not_found")
    assert_error(await client.delete("/api/jobs/1", headers=ADMIN), 405, "method_not_allowed")


# -- dashboard ------------------------------------------------------------------------------
async def test_dashboard_page_is_self_contained_and_holds_no_job_data(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    await queue.enqueue(XSS, {"html": "<img src=x onerror=alert(2)>"}, tenant="acme")
    r = await client.get("/dashboard", headers=ADMIN)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "alert(" not in page and "onerror" not in page
    # No external assets: src/href name only the dashboard's own two files, no absolute URLs.
    assert re.findall(r"\s(?:src|href)\s*=\s*\"([^\"]*)\"", page) == [
        "/dashboard/assets/dashboard.css",
        "/dashboard/assets/dashboard.js",
    ]
    assert "http://" not in page and "https://" not in page
    # Rendered client-side with textContent only (the script is a file of its own).
    script = (await client.get("/dashboard/assets/dashboard.js")).text
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page and sink not in script
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp
    assert 'data-api="/dashboard/api"' in page


async def test_dashboard_api_serves_job_fields_verbatim_as_json(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    xss_id = await queue.enqueue(XSS, {"html": "<b>hi</b>"}, tenant="acme")
    failed = await failed_job(queue, tenant="globex")

    stats = (await client.get("/dashboard/api/stats", headers=ADMIN)).json()
    assert stats["counts"]["queued"] == 1 and stats["counts"]["failed"] == 1

    r = await client.get("/dashboard/api/jobs", headers=ADMIN)
    assert r.headers["content-type"].startswith("application/json")
    jobs = r.json()["jobs"]
    assert {j["id"] for j in jobs} == {xss_id, failed}
    assert next(j for j in jobs if j["id"] == xss_id)["name"] == XSS
    assert next(j for j in jobs if j["id"] == failed)["error"] == "RuntimeError: kaput"

    only_failed = (await client.get("/dashboard/api/jobs?state=failed", headers=ADMIN)).json()
    assert [j["id"] for j in only_failed["jobs"]] == [failed]
    by_name = await client.get("/dashboard/api/jobs", params={"name": XSS}, headers=ADMIN)
    assert [j["id"] for j in by_name.json()["jobs"]] == [xss_id]
    limited = (await client.get("/dashboard/api/jobs?limit=1", headers=ADMIN)).json()
    assert len(limited["jobs"]) == 1

    detail = (await client.get(f"/dashboard/api/jobs/{failed}", headers=ADMIN)).json()
    assert detail["tenant"] == "globex" and detail["payload"] == {"n": 1}
    assert (
        detail["errors"][0]["message"] == "kaput"
        and "RuntimeError" in (detail["errors"][0]["traceback"])
    )
    assert [e["type"] for e in detail["events"]][:2] == ["enqueued", "started"]
    assert "failed" in [e["type"] for e in detail["events"]]
    assert [(log["level"], log["message"]) for log in detail["logs"]] == [("info", "about to fail")]
    assert (await client.get(f"/dashboard/api/jobs/{xss_id}", headers=ADMIN)).json()["payload"] == {
        "html": "<b>hi</b>"
    }


async def test_dashboard_api_refuses_bad_queries(client: httpx.AsyncClient) -> None:
    for query in ("state=exploded", "limit=0", "limit=abc", "limit=100000", "before=x"):
        r = await client.get(f"/dashboard/api/jobs?{query}", headers=ADMIN)
        assert_error(r, 400, "invalid")
    assert_error(await client.get("/dashboard/api/jobs/x1", headers=ADMIN), 404, "not_found")


async def test_dashboard_actions(queue: conveyor.Queue, client: httpx.AsyncClient) -> None:
    queued = await queue.enqueue("report")  # before "boom" is registered
    failed = await failed_job(queue)
    r = await client.post(f"/dashboard/api/jobs/{failed}/retry", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    r = await client.post(f"/dashboard/api/jobs/{queued}/cancel", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = await client.post(f"/dashboard/api/jobs/{queued}/cancel", headers=ADMIN)
    assert_error(r, 409, "conflict")
    r = await client.post(f"/dashboard/api/jobs/{failed}/retry", headers=ADMIN)
    assert_error(r, 409, "conflict")


async def test_dashboard_is_admin_only(queue: conveyor.Queue, client: httpx.AsyncClient) -> None:
    failed = await failed_job(queue)
    gets = [
        "/dashboard",
        "/dashboard/api/stats",
        "/dashboard/api/jobs",
        f"/dashboard/api/jobs/{failed}",
    ]
    for headers, status, code in ((ACME, 403, "forbidden"), ({}, 401, "unauthorized")):
        for path in gets:
            assert_error(await client.get(path, headers=headers), status, code)
        r = await client.post(f"/dashboard/api/jobs/{failed}/retry", headers=headers)
        assert_error(r, status, code)
    assert await state(queue, failed) is JobState.FAILED


async def test_mounted_under_a_prefix(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    parent = Starlette(routes=[Mount("/jobs", create_app(queue, authenticate=authenticate))])
    async with client_for(parent) as c:
        page = (await c.get("/jobs/dashboard", headers=ADMIN)).text
        assert 'data-api="/jobs/dashboard/api"' in page
        assert (await c.get("/jobs/dashboard/api/stats", headers=ADMIN)).status_code == 200
        assert (await c.get(f"/jobs/api/jobs/{job_id}", headers=ACME)).json()["id"] == job_id


# -- Host names (DNS rebinding) ------------------------------------------------------------
REBOUND = "attacker.example:8765"  # a name the attacker points at the server's address


async def test_allowed_hosts_refuse_any_other_host_header(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", {"secret": "s3cret-payload"}, tenant="acme")
    app = create_app(queue, authenticate=authenticate, allowed_hosts=["testserver", "[::1]"])
    async with client_for(app) as c:
        for path in (
            f"/api/jobs/{job_id}",
            f"/dashboard/api/jobs/{job_id}",
            "/dashboard",
            "/dashboard/api/stats",
            "/metrics",
            "/nothing/here",
        ):
            r = await c.get(path, headers={**ADMIN, "Host": REBOUND})
            assert_error(r, 400, "invalid_host")
            assert "s3cret" not in r.text
        # The rebinding page's own origin matches the Host it sends: refused all the same.
        rebound = {**ADMIN, "Host": REBOUND, "Origin": f"http://{REBOUND}"}
        for path in (f"/api/jobs/{job_id}/cancel", f"/dashboard/api/jobs/{job_id}/cancel"):
            assert_error(await c.post(path, headers=rebound), 400, "invalid_host")
        assert await state(queue, job_id) is JobState.QUEUED
        for bad in ("", "testserver.attacker.example", "evil.testserver", "[::2]:8000"):
            r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": bad})
            assert_error(r, 400, "invalid_host")
        # The allowed names pass, on any port and in any case.
        for host in ("testserver", "TestServer:8765", "[::1]:8000", "[::1]"):
            r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": host})
            assert r.status_code == 200 and r.json()["id"] == job_id, host
        good = {**ADMIN, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
        r = await c.post(f"/dashboard/api/jobs/{job_id}/cancel", headers=good)
        assert r.status_code == 200 and r.json()["state"] == "cancelled"


async def test_allowed_hosts_wildcards(queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue("report", tenant="acme")
    app = create_app(queue, authenticate=authenticate, allowed_hosts=["*.example.com"])
    async with client_for(app) as c:
        for host in ("jobs.example.com", "a.b.example.com:8443"):
            r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": host})
            assert r.status_code == 200, host
        for host in ("example.com", "testserver", "evilexample.com"):
            r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": host})
            assert_error(r, 400, "invalid_host")
    async with client_for(create_app(queue, authenticate=authenticate, allowed_hosts=["*"])) as c:
        r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": REBOUND})
        assert r.status_code == 200


async def test_without_allowed_hosts_any_host_is_served(queue: conveyor.Queue) -> None:
    # allowed_hosts=None (the default) is for apps mounted behind the user's own proxy.
    job_id = await queue.enqueue("report", tenant="acme")
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        r = await c.get(f"/api/jobs/{job_id}", headers={**ACME, "Host": REBOUND})
        assert r.status_code == 200 and r.json()["id"] == job_id


def test_bad_allowed_hosts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    queue = conveyor.Queue.from_env()
    for bad in ("localhost", [""], ["localhost:8000"], ["http://localhost"], [None], ["a b"]):
        with pytest.raises(conveyor.ValidationError, match="allowed_hosts"):
            create_app(queue, authenticate=authenticate, allowed_hosts=bad)  # type: ignore[arg-type]


# -- response headers -----------------------------------------------------------------------
async def test_every_response_says_nosniff(queue: conveyor.Queue) -> None:
    def auth(request: Any) -> Principal | None:
        if request.headers.get("authorization") == "Bearer crash":
            raise RuntimeError("a bug in the app's authenticate")
        return authenticate(request)

    job_id = await queue.enqueue("report", tenant="acme")
    app = create_app(queue, authenticate=auth, allowed_hosts=["testserver"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        responses = {
            "status": await c.get(f"/api/jobs/{job_id}", headers=ACME),
            "not found": await c.get("/api/jobs/x", headers=ACME),
            "unauthorized": await c.get(f"/api/jobs/{job_id}"),
            "forbidden": await c.get("/dashboard", headers=ACME),
            "page": await c.get("/dashboard", headers=ADMIN),
            "stats": await c.get("/dashboard/api/stats", headers=ADMIN),
            "detail": await c.get(f"/dashboard/api/jobs/{job_id}", headers=ADMIN),
            "action": await c.post(f"/api/jobs/{job_id}/cancel", headers=ADMIN),
            "metrics": await c.get("/metrics", headers=ADMIN),
            "bad query": await c.get("/dashboard/api/jobs?limit=0", headers=ADMIN),
            "method": await c.delete("/api/jobs/1", headers=ADMIN),
            "redirect": await c.get("/dashboard/", headers=ADMIN),
            "host": await c.get("/api/jobs/1", headers={**ADMIN, "Host": REBOUND}),
            "crash": await c.get("/api/jobs/1", headers={"Authorization": "Bearer crash"}),
        }
    assert responses["redirect"].status_code in (307, 308)
    assert responses["crash"].status_code == 500
    for what, r in responses.items():
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], what


# -- tenant checks before loading -----------------------------------------------------------
async def test_a_principal_without_a_tenant_gets_404_without_a_lookup(
    queue: conveyor.Queue, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await queue.enqueue("report", {"big": "x" * 100_000}, tenant="acme")
    loaded: list[int] = []
    get_job = queue.get_job

    async def spy(job_id: int, *, tenant: str | None = None) -> conveyor.Job | None:
        loaded.append(job_id)
        return await get_job(job_id, tenant=tenant)

    monkeypatch.setattr(queue, "get_job", spy)
    r = await client.get(f"/api/jobs/{job_id}", headers=NOBODY)
    assert_error(r, 404, "not_found")
    assert r.json() == (await client.get("/api/jobs/x", headers=ACME)).json()
    assert loaded == []  # it could never read a job: nothing was loaded to find out
    assert (await client.get(f"/api/jobs/{job_id}", headers=ACME)).status_code == 200


# -- stored values the JSON encoder cannot nest into ----------------------------------------
async def test_a_deeply_nested_result_is_served_with_a_placeholder(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    @queue.job("deep")
    async def deep(payload: Any, ctx: conveyor.Context) -> Any:
        value: Any = []
        for _ in range(900):
            value = [value]
        return value

    job_id = await queue.enqueue("deep", {"n": 1}, tenant="acme")
    assert await queue.worker(include=["deep"]).run_once() == 1
    assert await state(queue, job_id) is JobState.COMPLETED

    r = await client.get(f"/api/jobs/{job_id}", headers=ACME)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == job_id and body["state"] == "completed"
    assert isinstance(body["result"], str) and "nested" in body["result"]

    r = await client.get(f"/dashboard/api/jobs/{job_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["result"] == body["result"]
    assert detail["payload"] == {"n": 1}  # only the value that cannot be rendered is left out
    assert [e["type"] for e in detail["events"]][-1] == "completed"

    # A result 100 levels deep (the most enqueue accepts in a payload) is served as it is.
    @queue.job("shallow")
    async def shallow(payload: Any, ctx: conveyor.Context) -> Any:
        value: Any = []
        for _ in range(99):
            value = [value]
        return value

    other = await queue.enqueue("shallow", tenant="acme")
    assert await queue.worker(include=["shallow"]).run_once() == 1
    result = (await client.get(f"/api/jobs/{other}", headers=ACME)).json()["result"]
    for _ in range(99):
        assert isinstance(result, list) and len(result) == 1
        result = result[0]
    assert result == []


# -- metrics --------------------------------------------------------------------------------
async def test_metrics_are_prometheus_text_for_admins(
    queue: conveyor.Queue, client: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await queue.enqueue("report")
    await failed_job(queue)
    assert_error(await client.get("/metrics"), 401, "unauthorized")
    assert_error(await client.get("/metrics", headers=ACME), 403, "forbidden")
    r = await client.get("/metrics", headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    values = samples(r.text)
    assert values["conveyor_up"] == 1
    assert values['conveyor_jobs{state="queued"}'] == 3
    assert values['conveyor_jobs{state="failed"}'] == 1
    assert values['conveyor_jobs{state="running"}'] == 0
    assert "# TYPE conveyor_jobs gauge" in lines
    assert len([key for key in values if key.startswith("conveyor_jobs{")]) == len(JobState)


async def test_public_metrics_need_no_credentials(queue: conveyor.Queue) -> None:
    await queue.enqueue("report")
    app = create_app(queue, authenticate=authenticate, metrics_public=True)
    async with client_for(app) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and 'conveyor_jobs{state="queued"} 1' in r.text
        assert_error(await c.get("/dashboard/api/stats"), 401, "unauthorized")


# -- dormant queue (no backend involved) ----------------------------------------------------
async def test_a_dormant_queue_mounts_no_status_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    queue = conveyor.Queue.from_env()
    assert queue.dormant
    async with client_for(create_app(queue, authenticate=authenticate)) as c:
        assert_error(await c.get("/api/jobs/1", headers=ACME), 404, "not_found")
        assert_error(await c.post("/api/jobs/1/retry", headers=ADMIN), 404, "not_found")
        for path in ("/dashboard", "/dashboard/api/stats", "/dashboard/api/jobs", "/metrics"):
            assert_error(await c.get(path, headers=ADMIN), 503, "dormant")
        assert_error(await c.get("/metrics"), 401, "unauthorized")


def test_bad_paths_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    queue = conveyor.Queue.from_env()
    with pytest.raises(conveyor.ValidationError, match="status_path"):
        create_app(queue, authenticate=authenticate, status_path="api/jobs")
    with pytest.raises(conveyor.ValidationError, match="authenticate"):
        create_app(queue, authenticate=None)  # type: ignore[arg-type]


async def test_a_store_outage_is_503_and_conveyor_up_0() -> None:
    require_backend("redis")
    queue = conveyor.Queue("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        app = create_app(queue, authenticate=authenticate)
        async with client_for(app) as c:
            r = await c.get("/metrics", headers=ADMIN)
            assert r.status_code == 200 and samples(r.text)["conveyor_up"] == 0
            assert "conveyor_jobs{" not in r.text
            for path in ("/api/jobs/1", "/dashboard/api/stats"):
                r = await c.get(path, headers=ADMIN)
                assert_error(r, 503, "unavailable")
                assert "127.0.0.1" not in r.text  # driver details stay in the log
    finally:
        await queue.close()
