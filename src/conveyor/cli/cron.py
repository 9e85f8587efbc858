"""``conveyor cron list|pause|resume|remove``."""

from __future__ import annotations

import json

import click
from rich.table import Table

from conveyor.cli.app import Ctx, console, fail, pass_ctx, text
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
