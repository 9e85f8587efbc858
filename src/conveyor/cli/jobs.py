"""``conveyor jobs list|show|retry|cancel`` and ``conveyor stats``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from conveyor.cli.app import Ctx, console, fail, pass_ctx, text
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
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
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
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    found = obj.run(
        lambda queue: queue.list_jobs(
            state=state,
            name=name,
            channel=channel,
            tags=list(tags) or None,
            tag_mode=tag_mode,
            tenant=tenant,
            limit=limit,
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
    for err in job.errors:
        console.print(
            Text.assemble((f"attempt {err['attempt']}", "red"), f" {err['type']}: {err['message']}")
        )
    for e in data["events"]:
        console.print(text(f"  {e['at']}  {e['type']} (attempt {e['attempt']})"))
    for r in data["logs"]:
        console.print(text(f"  {r['at']}  {r['level']}: {r['message']}"))


@jobs.command("retry")
@click.argument("job_id", type=int)
@pass_ctx
def jobs_retry(obj: Ctx, job_id: int) -> None:
    """Put a failed or cancelled job back in the queue with fresh attempts."""
    obj.run(lambda queue: queue.retry(job_id))
    click.echo(f"job {job_id} queued again")


@jobs.command("cancel")
@click.argument("job_id", type=int)
@pass_ctx
def jobs_cancel(obj: Ctx, job_id: int) -> None:
    """Cancel an upcoming or running job."""
    if not obj.run(lambda queue: queue.cancel(job_id)):
        fail(f"job {job_id} is already finished or does not exist", highlight=True)
    click.echo(f"job {job_id} cancelled")


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
