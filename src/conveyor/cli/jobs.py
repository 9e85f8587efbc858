"""``conveyor jobs list|show|retry|cancel|delete`` and ``conveyor stats``."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from conveyor.cli.app import Ctx, console, err_console, fail, pass_ctx, text
from conveyor.errors import ConveyorError
from conveyor.models import Job, JobState
from conveyor.queue import Queue
from conveyor.serialize import job_detail, job_dict

__all__ = ["jobs", "stats"]

# The rows of ``jobs show``'s table, in order; those in _AS_JSON are printed as JSON.
_SHOWN = (
    "id",
    "name",
    "state",
    "attempts",
    "stalls",
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
)
_AS_JSON = ("payload", "result", "tags")


@click.group()
def jobs() -> None:
    """Inspect and manage jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--name")
@click.option("--channel")
@click.option("--tag", "tags", multiple=True)
@click.option("--tag-mode", type=click.Choice(["any", "all", "exact", "none"]), default="any")
@click.option("--tenant")
@click.option("--name-prefix", help="Names starting with this (literally).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--before", "before_id", type=int, help="Page: jobs older than this id.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def jobs_list(
    obj: Ctx,
    state: str | None,
    name: str | None,
    channel: str | None,
    tags: tuple[str, ...],
    tag_mode: str,
    tenant: str | None,
    name_prefix: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """List jobs, newest first; a full page ends with the --before value of the next."""
    found = obj.run(
        lambda queue: queue.list_jobs(
            state=state,
            name=name,
            channel=channel,
            tags=list(tags) or None,
            tag_mode=tag_mode,
            tenant=tenant,
            limit=limit,
            before_id=before_id,
            name_prefix=name_prefix,
        )
    )
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
            *map(
                text,
                (
                    j.id,
                    j.name,
                    j.state.value,
                    _attempts(j),
                    f"{j.progress}%",
                    j.channel,
                    j.priority,
                    j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    f"{err['type']}: {err['message']}"[:60] if err else "",
                ),
            )
        )
    console.print(table)
    if len(found) == limit:
        err_console.print(text(f"more: --before {found[-1].id}"))


def _attempts(job: Job) -> str:
    """Attempts used out of ``max_attempts`` (runs that stalled use up none), then the
    stalls: ``1/3``, ``1/1 +1 stalled``."""
    used = f"{job.attempts - job.stalls}/{job.max_attempts}"
    return f"{used} +{job.stalls} stalled" if job.stalls else used


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def jobs_show(obj: Ctx, job_id: int, as_json: bool) -> None:
    """Show one job with its errors, events and logs."""

    async def fetch(queue: Queue) -> tuple[Job, dict[str, Any]] | None:
        job = await queue.get_job(job_id)
        if job is None:
            return None
        events = await queue.get_job_events(job_id)
        return job, job_detail(job, events, await queue.get_job_logs(job_id))

    found = obj.run(fetch)
    if found is None:
        fail(f"job {job_id} not found", highlight=True)
    job, data = found
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(show_header=False)
    for key in _SHOWN:
        table.add_row(key, text(json.dumps(data[key]) if key in _AS_JSON else data[key]))
    console.print(table)
    if job.wait_token is not None or job.state is JobState.WAITING:
        what = f"token {job.wait_token}" if job.wait_token else "the end of a sleep"
        console.print(text(f"waiting for {what}, until {data['run_at']}"))
    if data["steps"]:
        console.print(Text("steps", style="bold"))
        for step in data["steps"]:
            console.print(text(f"  {step['at']}  {step['name']} = {json.dumps(step['result'])}"))
    if data["tokens"]:
        console.print(Text("tokens", style="bold"))
        for token in data["tokens"]:
            tags = f" tags {','.join(token['tags'])}" if token["tags"] else ""
            console.print(
                text(f"  {token['id']}  {token['state']}, expires {token['expires_at']}{tags}")
            )
    if job.errors:
        console.print(Text("errors", style="bold"))
    for err in job.errors:
        console.print(
            Text.assemble(
                (f"attempt {err['attempt']}", "red"), " ", text(f"{err['type']}: {err['message']}")
            )
        )
        if err.get("traceback"):
            console.print(text("    " + str(err["traceback"]).rstrip().replace("\n", "\n    ")))
    if data["events"]:
        console.print(Text("events", style="bold"))
    for e in data["events"]:
        extra = f" {json.dumps(e['data'])}" if e["data"] else ""
        console.print(text(f"  {e['at']}  {e['type']} (attempt {e['attempt']}){extra}"))
    if data["logs"]:
        console.print(Text("logs", style="bold"))
    for r in data["logs"]:
        console.print(text(f"  {r['at']}  [attempt {r['attempt']}] {r['level']}: {r['message']}"))


_DELETABLE = ("scheduled", "queued", "waiting", "completed", "failed", "cancelled")
_RETRYABLE = ("failed", "cancelled")
_CANCELLABLE = ("scheduled", "queued", "waiting", "running")
_PAGE = 1000


def _filter_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The options of ``jobs retry|cancel`` that select jobs by filter instead of by id."""
    for option in reversed(
        (
            click.argument("job_id", type=int, required=False),
            click.option("--state", type=click.Choice([s.value for s in JobState])),
            click.option("--name"),
            click.option("--channel"),
            click.option("--tenant"),
            click.option("--all", "every", is_flag=True, help="Act on every matching job."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
            click.option("--json", "as_json", is_flag=True, help="JSON output (with --all)."),
        )
    ):
        fn = option(fn)
    return fn


class _Bulk:
    """``jobs retry|cancel`` by filter: the filter, the states it may select, and the
    action on one job (True when done)."""

    def __init__(
        self,
        verb: str,
        states: tuple[str, ...],
        act: Callable[[Queue, int], Awaitable[bool]],
        filters: dict[str, str | None],
    ) -> None:
        self.verb, self.states, self.act, self.filters = verb, states, act, filters

    def check(self, job_id: int | None, every: bool) -> None:
        """Exit 2 unless exactly one of JOB_ID and ``--all`` is given, filters only with
        ``--all``, and a ``--state`` this command can act on."""
        given = [f"--{k}" for k, v in self.filters.items() if v is not None]
        if job_id is not None and (every or given):
            fail(f"jobs {self.verb} takes a JOB_ID or --all with filters, not both", code=2)
        if job_id is None and not every:
            fail(f"jobs {self.verb} needs a JOB_ID, or --all to select jobs by filter", code=2)
        state = self.filters["state"]
        if state is not None and state not in self.states:
            fail(
                f"jobs {self.verb} --all takes --state {' or '.join(self.states)}, got {state!r}",
                code=2,
            )

    async def select(self, queue: Queue) -> list[int]:
        """The ids of every matching job, paging through all of them (newest first)."""
        ids: list[int] = []
        state = self.filters["state"]
        for st in (state,) if state else self.states:
            before: int | None = None
            while True:
                page = await queue.list_jobs(
                    state=st,
                    name=self.filters["name"],
                    channel=self.filters["channel"],
                    tenant=self.filters["tenant"],
                    limit=_PAGE,
                    before_id=before,
                )
                ids.extend(j.id for j in page)
                if len(page) < _PAGE:
                    break
                before = page[-1].id
        return ids

    async def run(self, queue: Queue, yes: bool, as_json: bool) -> tuple[int, int]:
        """Select, confirm (unless ``yes``), act; ``(matched, done)``."""
        ids = await self.select(queue)
        if not as_json:
            err_console.print(text(f"{len(ids)} job(s) match"))
        if not ids:
            return 0, 0
        if not yes and not click.confirm(f"{self.verb} {len(ids)} job(s)?", err=True):
            fail(f"not confirmed: no job {self.verb} done")
        done = 0
        with Progress(console=err_console, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task(self.verb, total=len(ids))
            for job_id in ids:
                try:
                    done += await self.act(queue, job_id)
                except ConveyorError:
                    pass  # it changed state since it was selected
                bar.advance(task)
        return len(ids), done


async def _retry_one(queue: Queue, job_id: int) -> bool:
    await queue.retry(job_id)
    return True


async def _cancel_one(queue: Queue, job_id: int) -> bool:
    return await queue.cancel(job_id)


async def _delete_one(queue: Queue, job_id: int) -> bool:
    return await queue.delete(job_id)


def _bulk(obj: Ctx, bulk: _Bulk, yes: bool, as_json: bool, past: str) -> None:
    matched, done = obj.run(lambda queue: bulk.run(queue, yes, as_json))
    if as_json:
        click.echo(json.dumps({"matched": matched, "done": done}))
    else:
        click.echo(f"{done} of {matched} job(s) {past}")


@jobs.command("retry")
@_filter_options
@pass_ctx
def jobs_retry(
    obj: Ctx,
    job_id: int | None,
    state: str | None,
    name: str | None,
    channel: str | None,
    tenant: str | None,
    every: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Put a failed or cancelled job back in the queue with fresh attempts; with --all,
    every failed or cancelled job matching the filters."""
    filters = {"state": state, "name": name, "channel": channel, "tenant": tenant}
    bulk = _Bulk("retry", _RETRYABLE, _retry_one, filters)
    bulk.check(job_id, every)
    if job_id is None:
        _bulk(obj, bulk, yes, as_json, "queued again")
        return
    obj.run(lambda queue: queue.retry(job_id))
    click.echo(json.dumps({"id": job_id}) if as_json else f"job {job_id} queued again")


@jobs.command("cancel")
@_filter_options
@pass_ctx
def jobs_cancel(
    obj: Ctx,
    job_id: int | None,
    state: str | None,
    name: str | None,
    channel: str | None,
    tenant: str | None,
    every: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Cancel an upcoming or running job; with --all, every upcoming or running job
    matching the filters."""
    filters = {"state": state, "name": name, "channel": channel, "tenant": tenant}
    bulk = _Bulk("cancel", _CANCELLABLE, _cancel_one, filters)
    bulk.check(job_id, every)
    if job_id is None:
        _bulk(obj, bulk, yes, as_json, "cancelled")
        return
    if not obj.run(lambda queue: queue.cancel(job_id)):
        fail(f"job {job_id} is already finished or does not exist", highlight=True)
    click.echo(json.dumps({"id": job_id}) if as_json else f"job {job_id} cancelled")


@click.command()
@click.option("--channel")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def stats(obj: Ctx, channel: str | None, as_json: bool) -> None:
    """Job counts per state."""
    counts = obj.run(lambda queue: queue.counts(channel))
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = Table("state", "jobs")
    for state, n in counts.items():
        table.add_row(text(state), text(n))
    console.print(table)


@jobs.command("delete")
@_filter_options
@pass_ctx
def jobs_delete(
    obj: Ctx,
    job_id: int | None,
    state: str | None,
    name: str | None,
    channel: str | None,
    tenant: str | None,
    every: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete a job that is not running, with its events, logs, steps and tokens; with
    --all, every such job matching the filters (running jobs: cancel them first)."""
    filters = {"state": state, "name": name, "channel": channel, "tenant": tenant}
    bulk = _Bulk("delete", _DELETABLE, _delete_one, filters)
    bulk.check(job_id, every)
    if job_id is None:
        _bulk(obj, bulk, yes, as_json, "deleted")
        return
    if not obj.run(lambda queue: queue.delete(job_id)):
        fail(f"job {job_id} not found", highlight=True)
    click.echo(json.dumps({"id": job_id}) if as_json else f"job {job_id} deleted")
