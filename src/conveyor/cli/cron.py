"""``conveyor cron list|add|edit|run|pause|resume|remove``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from conveyor.cli.app import Ctx, console, fail, pass_ctx, text
from conveyor.cli.enqueue import parse_payload
from conveyor.models import CronSchedule
from conveyor.queue import Queue
from conveyor.serialize import schedule_dict

__all__ = ["cron"]


@click.group()
def cron() -> None:
    """Inspect and manage cron schedules."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def cron_list(obj: Ctx, as_json: bool) -> None:
    """List schedules."""
    rows = [schedule_dict(s) for s in obj.run(lambda queue: queue.list_cron())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "expression", "job", "timezone", "paused", "next run", "last run")
    for r in rows:
        table.add_row(
            *map(
                text,
                (
                    r["name"],
                    r["expression"],
                    r["job"],
                    r["timezone"],
                    str(r["paused"]).lower(),
                    r["next_run_at"] or "-",
                    r["last_run_at"] or "-",
                ),
            )
        )
    console.print(table)


@cron.command("pause")
@click.argument("name")
@pass_ctx
def cron_pause(obj: Ctx, name: str) -> None:
    """Pause a schedule."""
    obj.run(lambda queue: queue.pause_cron(name))
    click.echo(f"schedule {name} paused")


@cron.command("resume")
@click.argument("name")
@pass_ctx
def cron_resume(obj: Ctx, name: str) -> None:
    """Resume a schedule."""
    obj.run(lambda queue: queue.resume_cron(name))
    click.echo(f"schedule {name} resumed")


@cron.command("remove")
@click.argument("name")
@pass_ctx
def cron_remove(obj: Ctx, name: str) -> None:
    """Delete a schedule (its pending jobs stay)."""
    if not obj.run(lambda queue: queue.remove_cron(name)):
        fail(f"no schedule named {name!r}", highlight=True)
    click.echo(f"schedule {name} removed")


def _saved(schedule: CronSchedule, verb: str, as_json: bool) -> None:
    row = schedule_dict(schedule)
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"schedule {row['name']} {verb}: next run {row['next_run_at'] or '-'}")


@cron.command("add")
@click.argument("name")
@click.argument("expression")
@click.option("--job", help="The job to enqueue.  [default: NAME]")
@click.option("--payload", help="The payload, as JSON.  [default: null]")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def cron_add(
    obj: Ctx,
    name: str,
    expression: str,
    job: str | None,
    payload: str | None,
    timezone: str,
    as_json: bool,
) -> None:
    """Create schedule NAME firing on the cron EXPRESSION (or replace it whole)."""
    data = None if payload is None else parse_payload(payload)

    async def go(queue: Queue) -> CronSchedule:
        return await queue.add_cron(name, expression, job=job, payload=data, timezone=timezone)

    _saved(obj.run(go), "saved", as_json)


@cron.command("edit")
@click.argument("name")
@click.argument("expression", required=False)
@click.option("--job", help="The job to enqueue.")
@click.option("--payload", help="The payload, as JSON.")
@click.option("--timezone")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def cron_edit(
    obj: Ctx,
    name: str,
    expression: str | None,
    job: str | None,
    payload: str | None,
    timezone: str | None,
    as_json: bool,
) -> None:
    """Change only the given parts of schedule NAME."""
    changes: dict[str, Any] = {}
    if expression is not None:
        changes["expression"] = expression
    if job is not None:
        changes["job"] = job
    if payload is not None:
        changes["payload"] = parse_payload(payload)
    if timezone is not None:
        changes["timezone"] = timezone
    if not changes:
        fail(
            "cron edit needs something to change: EXPRESSION, --job, --payload or --timezone",
            code=2,
        )
    _saved(obj.run(lambda queue: queue.edit_cron(name, **changes)), "edited", as_json)


@cron.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def cron_run(obj: Ctx, name: str, as_json: bool) -> None:
    """Enqueue schedule NAME's job now, once, and print its id (the schedule is unchanged)."""
    job_id = obj.run(lambda queue: queue.run_cron(name))
    click.echo(json.dumps({"id": job_id}) if as_json else str(job_id))
