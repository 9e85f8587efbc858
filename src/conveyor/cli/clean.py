"""``conveyor clean``."""

from __future__ import annotations

import json

import click

from conveyor.cli.app import Ctx, fail, pass_ctx
from conveyor.errors import ConveyorError
from conveyor.settings import parse_duration

__all__ = ["clean"]


@click.command()
@click.option("--state", required=True, type=click.Choice(["completed", "failed", "cancelled"]))
@click.option("--older-than", required=True, help="A duration: seconds or 30s, 12h, 7d, 2w.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def clean(obj: Ctx, state: str, older_than: str, as_json: bool) -> None:
    """Delete finished jobs in STATE that finished more than --older-than ago."""
    try:
        age = parse_duration(older_than, "--older-than", positive=False)
    except ConveyorError as exc:
        fail(str(exc), code=2)
    removed = obj.run(lambda queue: queue.clean(age, state))
    if as_json:
        click.echo(json.dumps({"removed": removed}))
        return
    click.echo(f"removed {removed} {state} job(s)")
