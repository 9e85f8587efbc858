"""The ``conveyor`` command. Signal handling for workers lives here (via handle_signals).

Exit codes: 0 on success, 1 on an error (message on stderr), 2 on bad usage.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from conveyor.errors import ConveyorError
from conveyor.models import Job, JobState
from conveyor.queue import Queue

T = TypeVar("T")
# Piped output (grep, less) keeps whole values instead of rich's 80-column truncation.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def _load_app(spec: str) -> Queue:
    """``module:attribute`` → the Queue it names (the cwd is importable, like uvicorn)."""
    if ":" not in spec:
        raise click.BadParameter(f"{spec!r} is not module:attribute (e.g. myapp.jobs:queue)")
    module_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}")
    if callable(obj) and not isinstance(obj, Queue):
        obj = obj()
    if not isinstance(obj, Queue):
        raise click.BadParameter(f"{spec} is a {type(obj).__name__}, not a conveyor.Queue")
    return obj


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coro_fn())
    except ConveyorError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)


class _Ctx:
    def __init__(self, app: str | None, url: str | None, schema: str | None, prefix: str | None):
        self.app, self.url, self.schema, self.prefix = app, url, schema, prefix

    def queue(self) -> Queue:
        try:
            if self.app:
                return _load_app(self.app)
            return Queue(self.url, schema=self.schema, prefix=self.prefix)
        except ConveyorError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            sys.exit(1)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="conveyor")
@click.option(
    "--app",
    envvar="CONVEYOR_APP",
    help="module:queue to use (e.g. myapp.jobs:queue). [env CONVEYOR_APP]",
)
@click.option(
    "--url", envvar="CONVEYOR_URL", help="Store URL when no --app is given. [env CONVEYOR_URL]"
)
@click.option("--schema", envvar="CONVEYOR_SCHEMA", help="PostgreSQL schema. [env CONVEYOR_SCHEMA]")
@click.option("--prefix", envvar="CONVEYOR_PREFIX", help="Redis key prefix. [env CONVEYOR_PREFIX]")
@click.pass_context
def main(
    ctx: click.Context, app: str | None, url: str | None, schema: str | None, prefix: str | None
) -> None:
    """conveyor: durable background jobs on SQLite, PostgreSQL or Redis."""
    ctx.obj = _Ctx(app, url, schema, prefix)


def _csv(value: tuple[str, ...] | str | None) -> list[str] | None:
    if not value:
        return None
    items = value if isinstance(value, tuple) else (value,)
    out = [part.strip() for item in items for part in item.split(",") if part.strip()]
    return out or None


@main.command()
@click.argument("app", required=False)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    envvar="CONVEYOR_CONCURRENCY",
    help="Jobs run at once. [env CONVEYOR_CONCURRENCY]",
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    envvar="CONVEYOR_CHANNELS",
    help="Only these channels (repeat or comma-separate; default all). [env CONVEYOR_CHANNELS]",
)
@click.option(
    "--include",
    multiple=True,
    envvar="CONVEYOR_INCLUDE",
    help="Only these job names. [env CONVEYOR_INCLUDE]",
)
@click.option(
    "--exclude",
    multiple=True,
    envvar="CONVEYOR_EXCLUDE",
    help="Never these job names. [env CONVEYOR_EXCLUDE]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEYOR_TIMEOUT",
    help="Default job timeout in seconds. [env CONVEYOR_TIMEOUT]",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="CONVEYOR_DRAIN_TIMEOUT",
    help="Seconds SIGTERM waits for running jobs. [env CONVEYOR_DRAIN_TIMEOUT]",
)
@click.option("--once", is_flag=True, help="Process what is due now, then exit.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@pass_ctx
def worker(
    obj: _Ctx,
    app: str | None,
    concurrency: int,
    channels: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    timeout: float | None,
    drain_timeout: float,
    once: bool,
    verbose: int,
) -> None:
    """Run a worker for APP (module:queue). SIGTERM/SIGINT drain; a second one stops at once."""
    import logging

    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if app:
        obj.app = app
    if not obj.app:
        raise click.UsageError("give the queue to run: conveyor worker myapp.jobs:queue")
    queue = obj.queue()

    async def go() -> None:
        w = queue.worker(
            channels=_csv(channels),
            concurrency=concurrency,
            include=_csv(include),
            exclude=_csv(exclude),
            timeout=timeout,
            drain_timeout=drain_timeout,
            handle_signals=True,
        )
        try:
            if once:
                n = await w.run_once()
                err_console.print(f"processed {n} job(s)")
            else:
                await w.run()
        finally:
            await queue.close()

    _run(go)
    _exit_past_stuck_threads()


def _exit_past_stuck_threads() -> None:
    """A sync handler that ignores ctx.cancelled keeps its thread; its job was already
    requeued, so exit instead of waiting for it (the interpreter would join it)."""
    import threading

    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        err_console.print(f"{len(stuck)} handler thread(s) still running; exiting without them")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@main.command()
@click.option("--sql", is_flag=True, help="Print the schema SQL for a DBA instead of applying it.")
@pass_ctx
def migrate(obj: _Ctx, sql: bool) -> None:
    """Create or upgrade the store's schema (idempotent)."""
    queue = obj.queue()
    if sql:
        from conveyor import backends

        backend = backends.from_settings(queue.settings)
        click.echo(backend.migration_sql())
        return

    async def go() -> None:
        try:
            await queue.migrate()
        finally:
            await queue.close()

    _run(go)
    err_console.print("migrated")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_dict(job: Job) -> dict[str, Any]:
    """The JSON form of a job (CLI --json, web API)."""
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "payload": job.payload,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "result": job.result,
        "errors": list(job.errors),
        "last_error": job.last_error,
        "tags": list(job.tags),
        "group": job.group,
        "tenant": job.tenant,
        "channel": job.channel,
        "priority": job.priority,
        "run_at": _iso(job.run_at),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


@main.group()
def jobs() -> None:
    """Inspect and manage jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--name")
@click.option("--channel")
@click.option("--tag", "tags", multiple=True)
@click.option("--tag-mode", type=click.Choice(["any", "all", "exact", "none"]), default="any")
@click.option("--tenant")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def jobs_list(
    obj: _Ctx,
    state: str | None,
    name: str | None,
    channel: str | None,
    tags: tuple[str, ...],
    tag_mode: str,
    tenant: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    queue = obj.queue()

    async def go() -> list[Job]:
        try:
            return await queue.list_jobs(
                state=state,
                name=name,
                channel=channel,
                tags=list(tags) or None,
                tag_mode=tag_mode,
                tenant=tenant,
                limit=limit,
            )
        finally:
            await queue.close()

    found = _run(go)
    if as_json:
        click.echo(json.dumps([job_dict(j) for j in found], indent=2))
        return
    table = Table(
        "id",
        "name",
        "state",
        "attempts",
        "progress",
        "channel",
        "priority",
        "created",
        "last error",
    )
    for j in found:
        err = j.last_error
        table.add_row(
            str(j.id),
            j.name,
            j.state.value,
            f"{j.attempts}/{j.max_attempts}",
            f"{j.progress}%",
            j.channel,
            str(j.priority),
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{err['type']}: {err['message']}"[:60] if err else "",
        )
    console.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def jobs_show(obj: _Ctx, job_id: int, as_json: bool) -> None:
    """Show one job with its errors, events and logs."""
    queue = obj.queue()

    async def go() -> tuple[Job | None, list[Any], list[Any]]:
        try:
            job = await queue.get_job(job_id)
            if job is None:
                return None, [], []
            return job, await queue.get_job_events(job_id), await queue.get_job_logs(job_id)
        finally:
            await queue.close()

    job, events, logs = _run(go)
    if job is None:
        err_console.print(f"[red]error:[/red] job {job_id} not found")
        sys.exit(1)
    data = job_dict(job)
    data["events"] = [
        {"type": e.type, "attempt": e.attempt, "at": _iso(e.at), "data": dict(e.data)}
        for e in events
    ]
    data["logs"] = [
        {"at": _iso(r.at), "level": r.level, "message": r.message, "attempt": r.attempt}
        for r in logs
    ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(show_header=False)
    for key in (
        "id",
        "name",
        "state",
        "attempts",
        "max_attempts",
        "progress",
        "channel",
        "priority",
        "tenant",
        "group",
        "tags",
        "payload",
        "result",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
    ):
        table.add_row(
            key, json.dumps(data[key]) if key in ("payload", "result", "tags") else str(data[key])
        )
    console.print(table)
    for err in job.errors:
        console.print(
            f"[red]attempt {err['attempt']}[/red] {err['type']}: {err['message']}", highlight=False
        )
    for e in data["events"]:
        console.print(f"  {e['at']}  {e['type']} (attempt {e['attempt']})", highlight=False)
    for r in data["logs"]:
        console.print(f"  {r['at']}  {r['level']}: {r['message']}", highlight=False)


@jobs.command("retry")
@click.argument("job_id", type=int)
@pass_ctx
def jobs_retry(obj: _Ctx, job_id: int) -> None:
    """Put a failed or cancelled job back in the queue with fresh attempts."""
    queue = obj.queue()

    async def go() -> None:
        try:
            await queue.retry(job_id)
        finally:
            await queue.close()

    _run(go)
    click.echo(f"job {job_id} queued again")


@jobs.command("cancel")
@click.argument("job_id", type=int)
@pass_ctx
def jobs_cancel(obj: _Ctx, job_id: int) -> None:
    """Cancel an upcoming or running job."""
    queue = obj.queue()

    async def go() -> bool:
        try:
            return await queue.cancel(job_id)
        finally:
            await queue.close()

    if not _run(go):
        err_console.print(f"[red]error:[/red] job {job_id} is already finished or does not exist")
        sys.exit(1)
    click.echo(f"job {job_id} cancelled")


@main.command()
@click.option("--channel")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def stats(obj: _Ctx, channel: str | None, as_json: bool) -> None:
    """Job counts per state."""
    queue = obj.queue()

    async def go() -> dict[str, int]:
        try:
            return await queue.counts(channel)
        finally:
            await queue.close()

    counts = _run(go)
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = Table("state", "jobs")
    for state, n in counts.items():
        table.add_row(state, str(n))
    console.print(table)


@main.command()
@click.argument("app", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    help="Admin token (Authorization: Bearer …, or ?token= once). Required unless --host "
    "is a loopback address. [env CONVEYOR_DASHBOARD_TOKEN]",
)
@pass_ctx
def dashboard(obj: _Ctx, app: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the web dashboard, status API and metrics (needs conveyor[web])."""
    import ipaddress

    try:
        import uvicorn

        from conveyor.web import create_app
    except ImportError as exc:
        err_console.print(
            f"[red]error:[/red] the dashboard needs: pip install 'conveyor[web]' ({exc})"
        )
        sys.exit(1)
    if app:
        obj.app = app
    token = token or None  # an empty token is no token
    queue = obj.queue()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not token and not loopback:
        raise click.UsageError(
            "serving beyond localhost needs --token (or CONVEYOR_DASHBOARD_TOKEN)"
        )
    web_app: Any = create_app(queue, authenticate=_token_auth(token))
    if token:
        web_app = _TokenCookie(web_app, token)
    err_console.print(f"dashboard: http://{host}:{port}/dashboard")
    uvicorn.run(web_app, host=host, port=port, log_level="warning")


class _TokenCookie:
    """Opening the dashboard once with ``?token=…`` stores the token in an HttpOnly,
    SameSite=Strict cookie, so the browser's later API calls carry it."""

    def __init__(self, app: Any, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import hmac
        from urllib.parse import parse_qs

        if scope["type"] == "http":
            given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                cookie = f"conveyor_token={self.token}; HttpOnly; SameSite=Strict; Path=/"

                async def send_with_cookie(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        headers = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                        message = {**message, "headers": headers}
                    await send(message)

                await self.app(scope, receive, send_with_cookie)
                return
        await self.app(scope, receive, send)


def _token_auth(token: str | None) -> Any:
    """Everyone local is admin without a token; with one, the bearer token (or a cookie
    set from ``?token=``) must match."""
    import hmac

    from conveyor.web import Principal

    def authenticate(request: Any) -> Any:
        if token is None:
            return Principal(tenant=None, admin=True)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.query_params.get("token") or request.cookies.get("conveyor_token")
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return Principal(tenant=None, admin=True)
        return None

    return authenticate


@main.group()
def cron() -> None:
    """Inspect and manage cron schedules."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def cron_list(obj: _Ctx, as_json: bool) -> None:
    """List schedules."""
    queue = obj.queue()

    async def go() -> list[Any]:
        try:
            return await queue.list_cron()
        finally:
            await queue.close()

    schedules = _run(go)
    rows = [
        {
            "name": s.name,
            "expression": s.expression,
            "job": s.job,
            "timezone": s.timezone,
            "paused": s.paused,
            "allow_overlap": s.allow_overlap,
            "next_run_at": _iso(s.next_run_at),
            "last_run_at": _iso(s.last_run_at),
        }
        for s in schedules
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "expression", "job", "timezone", "paused", "next run", "last run")
    for r in rows:
        table.add_row(
            r["name"],
            r["expression"],
            r["job"],
            r["timezone"],
            str(r["paused"]).lower(),
            r["next_run_at"] or "-",
            r["last_run_at"] or "-",
        )
    console.print(table)


def _cron_action(action: str) -> Callable[..., None]:
    @pass_ctx
    def command(obj: _Ctx, name: str) -> None:
        queue = obj.queue()

        async def go() -> Any:
            try:
                if action == "remove":
                    return await queue.remove_cron(name)
                await getattr(queue, f"{action}_cron")(name)
                return True
            finally:
                await queue.close()

        if not _run(go):
            err_console.print(f"[red]error:[/red] no schedule named {name!r}")
            sys.exit(1)
        click.echo(f"schedule {name} {action}{'d' if action.endswith('e') else 'ed'}")

    return command


for _action, _help in (
    ("pause", "Pause a schedule."),
    ("resume", "Resume a schedule."),
    ("remove", "Delete a schedule (its pending jobs stay)."),
):
    cron.command(_action, help=_help)(click.argument("name")(_cron_action(_action)))


if __name__ == "__main__":  # pragma: no cover
    main()
