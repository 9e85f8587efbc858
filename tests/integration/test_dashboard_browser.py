"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against ``create_app`` served by uvicorn, on SQLite.

A real worker (in the test's event loop) runs the jobs; the server runs in a thread with
a queue of its own on the same store, as a web process beside workers would. Nothing
waits by sleeping: Playwright's waits and :func:`tests.conftest.wait_for` poll with
deadlines.

``python -m tests.integration.test_dashboard_browser docs/images`` saves the screenshots
that docs/web.md shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # require_browser() says so (and fails in CI)
    expect = None  # type: ignore[assignment]

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from conveyor.web import create_app
from conveyor.web.tokens import TokenCookie, token_authenticator
from tests.conformance._util import running
from tests.conftest import IN_CI, Store, wait_for

CHROMIUM = os.environ.get("CONVEYOR_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token"
IMG = '<img src=x onerror="window.__xss=1;alert(1)">'
SCRIPT = "<script>window.__xss=2;alert(2)</script>"
# Collected in every page before its own script runs: dialogs are also caught by
# Playwright; CSP violations would mean markup made it into the page.
INIT = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
window.alert = (m) => { window.__alerted = String(m); };
"""


def require_browser() -> None:
    reason = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if reason:
        if IN_CI:
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(f"SKIPPING BROWSER TESTS: {reason}")


# -- the server ------------------------------------------------------------------------------
@contextlib.contextmanager
def serve(url: str) -> Iterator[str]:
    """``create_app`` behind its token cookie, served by uvicorn in a thread with a queue of
    its own on ``url``; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    queue = conveyor.Queue(url)
    app = TokenCookie(
        create_app(queue, authenticate=token_authenticator(TOKEN), stream_interval=0.2), TOKEN
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await queue.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = 10.0
    for _ in range(int(deadline / 0.02)):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)  # the server thread starts; nothing else to wait on
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
async def queue(store: Store) -> conveyor.Queue:
    """A queue taking any job name (the tests enqueue names they register no handler for)."""
    q = store.queue(
        lease=2.0, heartbeat_interval=0.5, sweep_interval=0.2, poll_interval=0.2, strict_names=False
    )
    await q.migrate()
    return q


@pytest.fixture
async def site(queue: conveyor.Queue) -> AsyncIterator[tuple[str, conveyor.Queue]]:
    with serve(queue.settings.url) as base:
        yield base, queue


@pytest.fixture
def backend_name() -> str:
    return "sqlite"  # the browser tests need one store: the API tests cover all three


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_browser()
    from playwright.async_api import async_playwright

    # Locator waits only: a waitForFunction predicate is evaluated as a string, which the
    # dashboard's CSP (rightly) refuses.
    expect.set_options(timeout=10_000)

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, base: str, path: str = "", width: int = 1400) -> Any:
    """A page logged in (the token cookie set once), at ``/dashboard{path}``; dialogs are
    recorded in ``page.dialogs`` (and dismissed)."""
    context = await browser.new_context(viewport={"width": width, "height": 900})
    await context.add_init_script(INIT)
    page = await context.new_page()
    page.dialogs = []

    async def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto(f"{base}/dashboard{path}{'&' if '?' in path else '?'}token={TOKEN}")
    await page.locator("#live.on, #live.polling").wait_for()
    return page


async def assert_clean(page: Any) -> None:
    """No script of ours failed, no dialog, no injected script ran, no CSP violation."""
    assert page.errors == []
    assert page.dialogs == []
    assert await page.evaluate("window.__xss === undefined && window.__alerted === undefined")
    assert await page.evaluate("window.__violations") == []


# -- helpers for jobs ------------------------------------------------------------------------
async def failing(queue: conveyor.Queue, name: str, message: str = "kaput", **options: Any) -> int:
    """A job of ``name`` that ran once and failed with ``message``."""

    async def handler(payload: Any, ctx: conveyor.Context) -> None:
        ctx.log.info(f"about to fail: {payload!r}")
        raise RuntimeError(message)

    if name not in queue.definitions:
        queue.job(name)(handler)
    job_id = await queue.enqueue(name, {"n": 1}, **options)
    assert await queue.worker(include=[name]).run_once() >= 1
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    return job_id


# -- scenarios -------------------------------------------------------------------------------
async def test_overview_shows_channels_and_charts_and_pauses_a_channel(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    for i in range(3):
        await queue.enqueue("send-email", {"i": i}, channel="emails")
    await queue.enqueue("build-report", channel="reports")
    await failing(queue, "charge-card", channel="billing")

    page = await open_page(browser, base)
    cards = page.locator(".card[data-state=queued] .n")
    await cards.wait_for()
    assert await cards.text_content() == "4"
    assert await page.locator(".card[data-state=failed] .n").text_content() == "1"
    rows = page.locator("#channel-table tbody tr")
    assert await rows.count() == 3
    emails = page.locator("tr[data-channel=emails]")
    assert "3" in (await emails.locator("td").nth(1).text_content() or "")
    # Both charts are drawn from the throughput API: one failure in the last hour.
    assert await page.locator("svg.chart").count() == 2
    assert await page.locator("svg.chart rect.bar-failed").count() == 1

    await emails.locator("button[data-action=pause]").click()
    await emails.locator(".badge.paused").wait_for()
    assert (await queue.pause_state()).channels == ("emails",)
    await page.locator("#pause-all").click()
    await page.locator("#banner:not([hidden])").wait_for()
    assert (await queue.pause_state()).everything
    await page.locator("#banner button").click()  # resume all
    await page.locator("#banner").wait_for(state="hidden")
    assert (await queue.pause_state()).everything is False
    await assert_clean(page)


async def test_job_list_filters_pages_sorts_and_keeps_it_all_in_the_url(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    ids = [await queue.enqueue("send-email", {"i": i}, channel="emails") for i in range(30)]
    other = await queue.enqueue("build-report", channel="reports", tenant="acme", tags=["q4"])
    page = await open_page(browser, base, "/jobs?limit=25")
    table = page.locator("#job-table tbody tr")
    await table.first.wait_for()
    assert await table.count() == 25
    assert await table.first.get_attribute("data-id") == str(other)

    # Older, then newer: cursor paging, each page in the URL and the history.
    await page.locator("#older").click()
    await page.wait_for_url("**/dashboard/jobs?*before=*")
    await page.locator(f"tr[data-id='{ids[0]}']").wait_for()
    assert await table.count() == 6
    await page.locator("#newer").click()
    await page.locator(f"tr[data-id='{other}']").wait_for()
    assert "before=" not in page.url

    # Filter by name prefix and state; the filter survives a reload and goes with Back.
    await page.fill("#f-prefix", "build-")
    await page.select_option("#f-state", "queued")
    await page.click("#apply")
    await page.wait_for_url("**prefix=build-*")
    await page.locator("#job-table tbody tr").first.wait_for()
    await wait_for(lambda: _count(page, "#job-table tbody tr", 1))
    await page.reload()
    await page.locator(f"tr[data-id='{other}']").wait_for()
    assert await page.input_value("#f-prefix") == "build-"
    assert await page.input_value("#f-state") == "queued"
    await page.go_back()
    await page.locator(f"tr[data-id='{ids[-1]}']").wait_for()

    # Tag and tenant filters.
    await page.goto(f"{base}/dashboard/jobs?tag=q4&tenant=acme")
    await page.locator(f"tr[data-id='{other}']").wait_for()
    assert await page.locator("#job-table tbody tr").count() == 1

    # Sorting by a column (within the page), kept in the URL.
    await page.goto(f"{base}/dashboard/jobs?channel=emails&limit=25")
    await page.locator("th[data-sort=id]").click()
    await page.wait_for_url("**sort=id*")
    await expect(page.locator("#job-table tbody tr").first).to_have_attribute(
        "data-id", str(ids[5])
    )
    assert await page.locator("th[data-sort=id]").get_attribute("aria-sort") == "ascending"

    # Jump to a job by id; a deep link opens it too.
    await page.fill("#f-id", str(ids[3]))
    await page.press("#f-id", "Enter")
    await page.wait_for_url(f"**/dashboard/jobs/{ids[3]}")
    await page.locator("h1", has_text=f"#{ids[3]} send-email").wait_for()
    fresh = await open_page(browser, base, f"/jobs/{other}")
    await fresh.locator("h1", has_text=f"#{other} build-report").wait_for()
    assert await fresh.locator("#job-payload").text_content() == "null"
    await assert_clean(page)
    await assert_clean(fresh)


async def _count(page: Any, selector: str, n: int) -> bool:
    return bool(await page.locator(selector).count() == n)


async def test_a_running_jobs_detail_updates_live_without_reloading(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    steps = [asyncio.Event(), asyncio.Event()]

    @queue.job("slow-report")
    async def slow_report(payload: Any, ctx: conveyor.Context) -> dict[str, int]:
        await ctx.set_progress(10)
        ctx.log.info("started the report")
        await steps[0].wait()
        await ctx.set_progress(60)
        ctx.log.warning("halfway there")
        await steps[1].wait()
        return {"rows": 42}

    job_id = await queue.enqueue("slow-report", {"month": "2026-11"})
    async with running(queue.worker(include=["slow-report"])):
        page = await open_page(browser, base, f"/jobs/{job_id}")
        await page.evaluate("window.__sameDocument = true")
        text = page.locator("#job-progress-text")
        await expect(page.locator("#job-progress-text")).to_have_text("10%")
        steps[0].set()
        await expect(page.locator("#job-progress-text")).to_have_text("60%", timeout=10_000)
        assert await text.text_content() == "60%"
        steps[1].set()
        await page.locator(".detail-head .state.s-completed").wait_for(timeout=10_000)
        await page.locator("#job-result", has_text='"rows": 42').wait_for()
        # Log lines are stored with the attempt's outcome: they show once it ended.
        await page.locator(".logs", has_text="halfway there").wait_for()
        timeline = page.locator("#job-events .timeline")
        await timeline.locator("li", has_text="completed").wait_for()
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
        await assert_clean(page)


async def test_the_detail_falls_back_to_polling_when_the_stream_is_refused(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    go_on = asyncio.Event()

    @queue.job("slow-report")
    async def slow_report(payload: Any, ctx: conveyor.Context) -> None:
        await ctx.set_progress(20)
        await go_on.wait()
        await ctx.set_progress(80)
        await asyncio.Event().wait()  # until the worker stops

    job_id = await queue.enqueue("slow-report")
    async with running(queue.worker(include=["slow-report"]), drain_timeout=1):
        context = await browser.new_context()
        await context.route("**/stream", lambda route: route.fulfill(status=503, body="no"))
        await context.add_init_script(INIT)
        page = await context.new_page()
        page.on("dialog", lambda d: pytest.fail(f"a dialog: {d.message}"))
        await page.goto(f"{base}/dashboard/jobs/{job_id}?token={TOKEN}")
        await expect(page.locator("#job-progress-text")).to_have_text("20%")
        await page.locator("#live.polling").wait_for()
        go_on.set()
        await expect(page.locator("#job-progress-text")).to_have_text("80%", timeout=10_000)
        await queue.cancel(job_id)


async def test_bulk_retry_of_the_filtered_failed_jobs_asks_first(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    billing = [await failing(queue, "charge-card", channel="billing") for _ in range(3)]
    elsewhere = await failing(queue, "send-email", channel="emails")
    queued = await queue.enqueue("charge-card", channel="billing")

    page = await open_page(browser, base, "/jobs?state=failed&channel=billing")
    await page.locator(f"tr[data-id='{billing[0]}']").wait_for()
    await page.locator("[data-bulk=retry]").click()
    dialog = page.locator("dialog#confirm")
    await dialog.wait_for()
    assert "Retry 3 jobs" in (await dialog.text_content() or "")
    assert "state failed" in (await page.locator("#confirm-text").text_content() or "")
    # Said no: nothing changes.
    await page.click("#confirm-no")
    await dialog.wait_for(state="hidden")
    assert {(await queue.get_job(i)).state for i in billing} == {JobState.FAILED}  # type: ignore[union-attr]

    await page.locator("[data-bulk=retry]").click()
    await page.click("#confirm-yes")
    await page.locator(".toast", has_text="Retried 3 jobs").wait_for()
    for job_id in billing:
        job = await queue.get_job(job_id)
        assert job is not None and job.state is JobState.QUEUED
    other = await queue.get_job(elsewhere)
    assert other is not None and other.state is JobState.FAILED
    still = await queue.get_job(queued)
    assert still is not None and still.state is JobState.QUEUED
    # The list follows: no failed billing job is left.
    await page.locator("#job-table").wait_for(state="detached")
    await assert_clean(page)


async def test_cron_and_workers_views(site: tuple[str, conveyor.Queue], browser: Any) -> None:
    base, queue = site
    hold = asyncio.Event()

    @queue.job("nightly-report")
    async def nightly(payload: Any, ctx: conveyor.Context) -> None:
        await hold.wait()

    await queue.add_cron("nightly", "0 2 * * *", job="nightly-report", timezone="Europe/Amsterdam")
    page = await open_page(browser, base, "/cron")
    row = page.locator("tr[data-name=nightly]")
    await row.wait_for()
    assert "0 2 * * *" in (await row.text_content() or "")
    await row.locator("button[data-action=pause]").click()
    await row.locator(".badge.paused").wait_for()
    assert (await queue.list_cron())[0].paused
    await row.locator("button[data-action=resume]").click()
    await row.locator("button[data-action=pause]").wait_for()
    await row.locator("button[data-action=run]").click()
    toast = page.locator(".toast", has_text="enqueued job #")
    await toast.wait_for()
    job_id = int((await toast.text_content() or "").split("#")[1].split(".")[0])

    async with running(queue.worker(include=["nightly-report"], concurrency=3)):
        await page.click("a[data-nav=workers]")
        await page.wait_for_url("**/dashboard/workers")
        worker_row = page.locator("#worker-table tbody tr")
        await worker_row.wait_for()
        await worker_row.locator(f"a:text('#{job_id}')").wait_for(timeout=10_000)
        assert "1/3" in (await worker_row.text_content() or "")
        await worker_row.locator(f"a:text('#{job_id}')").click()
        await page.wait_for_url(f"**/dashboard/jobs/{job_id}")
        await page.locator(".detail-head .state.s-running").wait_for()
        hold.set()
    await assert_clean(page)


async def test_no_script_runs_from_names_tags_payloads_errors_or_logs(
    site: tuple[str, conveyor.Queue], browser: Any
) -> None:
    base, queue = site
    name = IMG[:60]
    bad = await failing(
        queue, name, message=SCRIPT, channel=IMG[:40], tenant=SCRIPT, tags=[IMG, SCRIPT]
    )
    plain = await queue.enqueue(SCRIPT, {"html": IMG, SCRIPT: [IMG]}, tags=[IMG])
    await queue.add_cron(IMG[:50], "0 3 * * *", job=SCRIPT)

    page = await open_page(browser, base)
    await page.locator(f"tr[data-channel='{IMG[:40]}']").wait_for()
    for path, selector in (
        ("/jobs", f"tr[data-id='{plain}']"),
        (f"/jobs/{bad}", "#job-errors .attempt"),
        (f"/jobs/{plain}", "#job-payload"),
        ("/cron", "#cron-table"),
    ):
        await page.goto(f"{base}/dashboard{path}")
        await page.locator(selector).wait_for()
        text = await page.evaluate("document.body.innerText")
        # Every value shows as the text it is...
        if path == "/jobs":
            assert name in text and SCRIPT in text and IMG in text
        if path == f"/jobs/{bad}":
            assert SCRIPT in text and "about to fail: {'n': 1}" in text
            assert f"RuntimeError: {SCRIPT}" in text
        if path == f"/jobs/{plain}":
            assert IMG in text and SCRIPT in text
        if path == "/cron":
            assert IMG[:50] in text and SCRIPT in text
        # ...and none of it became markup.
        assert await page.locator("img").count() == 0
        assert await page.locator("script").count() == 1  # dashboard.js
        await assert_clean(page)


@pytest.mark.parametrize("width", [1400, 800])
async def test_readable_at_1400_and_800_pixels(
    site: tuple[str, conveyor.Queue], browser: Any, width: int
) -> None:
    base, queue = site
    long_name = "generate-quarterly-revenue-report-for-every-region-and-currency"
    for i in range(5):
        await queue.enqueue(
            long_name, {"i": i}, channel="reports-and-analytics", tags=["q4", "finance"]
        )
    failed = await failing(queue, "charge-card", message="card declined " * 12)
    for path in ("", "/jobs", f"/jobs/{failed}", "/cron", "/workers"):
        page = await open_page(browser, base, path, width=width)
        await page.locator("main h1").wait_for()
        await expect(page.locator("main .empty", has_text="loading")).to_have_count(0)
        # The page never scrolls sideways: wide tables scroll inside their own box.
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (path, width, overflow)
        # No word is ever broken in the middle.
        broken = await page.evaluate(
            """[...document.querySelectorAll('body *')].filter((el) => {
                 const s = getComputedStyle(el);
                 return s.wordBreak === 'break-all' || s.overflowWrap === 'anywhere'
                   || s.wordBreak === 'break-word';
               }).length"""
        )
        assert broken == 0, (path, width)
        await assert_clean(page)
        await page.context.close()


# -- screenshots for the docs ----------------------------------------------------------------
async def seed_demo(url: str) -> None:
    """A store with an hour of history (run on a clock that walks through the hour),
    failures with tracebacks, cron schedules, and jobs in every state."""
    import random
    import time

    rng = random.Random(7)
    clock = ManualClock(time.time() - 3600)
    queue = conveyor.Queue(url, clock=clock)

    @queue.job("send-welcome-email", channel="emails", attempts=1)
    async def send_welcome(payload: Any, ctx: conveyor.Context) -> dict[str, bool]:
        ctx.log.info(f"sending to {payload['email']}")
        if payload.get("bounce"):
            raise ConnectionError("SMTP 550: mailbox unavailable")
        return {"sent": True}

    @queue.job("charge-card", channel="billing", attempts=1)
    async def charge(payload: Any, ctx: conveyor.Context) -> dict[str, str]:
        await ctx.set_progress(50)
        if payload.get("declined"):
            ctx.log.warning("the card was declined by the issuer")
            raise RuntimeError("card declined: insufficient funds")
        return {"charge": f"ch_{payload['order']}"}

    @queue.job("build-report", channel="reports", attempts=1)
    async def report(payload: Any, ctx: conveyor.Context) -> dict[str, int]:
        return {"rows": 1200}

    await queue.migrate()
    await queue.add_cron(
        "nightly-report", "0 2 * * *", job="build-report", timezone="Europe/Amsterdam"
    )
    await queue.add_cron(
        "hourly-digest",
        "0 * * * *",
        job="send-welcome-email",
        payload={"email": "digest@example.com"},
    )
    await queue.add_cron("cleanup", every=timedelta(minutes=15), job="build-report")
    for minute in range(60):
        for _ in range(rng.randint(4, 14)):
            bounce = rng.random() < 0.06
            await queue.enqueue(
                "send-welcome-email",
                {"email": f"user{rng.randint(1, 999)}@example.com", "bounce": bounce},
                tenant=rng.choice(["acme", "globex", "initech"]),
                tags=["signup"],
            )
        for _ in range(rng.randint(1, 5)):
            await queue.enqueue(
                "charge-card",
                {"order": rng.randint(1000, 9999), "declined": rng.random() < 0.1},
                tenant=rng.choice(["acme", "globex"]),
                tags=["payments"],
            )
        if minute % 10 == 0:
            await queue.enqueue("build-report", {"month": "2026-11"}, tags=["monthly"])
        await queue.worker(concurrency=20).run_once()
        clock.advance(60)
    for i in range(18):
        await queue.enqueue(
            "send-welcome-email", {"email": f"late{i}@example.com"}, tenant="acme", tags=["signup"]
        )
    for i in range(4):
        await queue.enqueue("build-report", {"month": f"2026-{i + 1:02d}"}, delay=600 + i * 60)
    await queue.set_channel_limits("emails", rate=conveyor.Rate(600, "1m"), fair_by="tenant")
    await queue.set_channel_limits("billing", concurrency=8)
    await queue.pause("reports")
    await queue.close()


async def screenshots(folder: Path) -> None:
    """Save the main views as PNGs in ``folder`` (for docs/web.md)."""
    import tempfile

    from playwright.async_api import async_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/demo.db"
        await seed_demo(url)
        queue = conveyor.Queue(url, heartbeat_interval=0.2)
        hold = asyncio.Event()

        @queue.job("charge-card", channel="billing")
        async def charge(payload: Any, ctx: conveyor.Context) -> None:
            await ctx.set_progress(35)
            await hold.wait()

        held = [
            await queue.enqueue(
                "charge-card", {"order": 4242 + i}, tenant="acme", tags=["payments"]
            )
            for i in range(3)
        ]
        failed = (await queue.list_jobs(state="failed", name="charge-card", limit=1))[0].id
        workers = [
            queue.worker(channels=["billing"], concurrency=8),
            queue.worker(channels=["billing", "emails"], concurrency=4, include=["charge-card"]),
        ]
        with serve(url) as base:
            async with running(workers[0], drain_timeout=1), running(workers[1], drain_timeout=1):

                async def all_listed() -> bool:
                    found = {i for w in await queue.workers() for i in w.running}
                    return found == set(held)

                await wait_for(all_listed, 15)
                async with async_playwright() as pw:
                    chromium = await pw.chromium.launch(executable_path=CHROMIUM)
                    page = await open_page(chromium, base, width=1400)
                    shots = {
                        "dashboard-overview.png": ("", "svg.chart"),
                        "dashboard-jobs.png": ("/jobs", "#job-table"),
                        "dashboard-job.png": (f"/jobs/{failed}", "#job-errors .attempt"),
                        "dashboard-cron.png": ("/cron", "#cron-table"),
                        "dashboard-workers.png": ("/workers", "#worker-table a"),
                    }
                    for file, (path, ready) in shots.items():
                        await page.goto(f"{base}/dashboard{path}")
                        await page.locator(ready).first.wait_for()
                        await page.screenshot(path=str(folder / file))
                    await chromium.close()
                hold.set()
        await queue.close()


async def _is_running(queue: conveyor.Queue, job_id: int) -> bool:
    job = await queue.get_job(job_id)
    return job is not None and job.state is JobState.RUNNING


if __name__ == "__main__":
    asyncio.run(screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")))
