"""``conveyor workers``: the workers running now, from the registry."""

from __future__ import annotations

import json

import click
from rich.table import Table

from conveyor.cli.app import Ctx, console, pass_ctx, text
from conveyor.queue import Queue
from conveyor.serialize import iso

__all__ = ["workers"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def workers(obj: Ctx, as_json: bool) -> None:
    """Workers running now (any host), oldest first, with the jobs they run. A worker
    that died drops out once its lease has passed."""

    async def fetch(queue: Queue) -> list[dict[str, object]]:
        return [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "channels": list(w.channels) if w.channels is not None else None,
                "concurrency": w.concurrency,
                "running": list(w.running),
                "started_at": iso(w.started_at),
                "last_seen": iso(w.last_seen),
            }
            for w in await queue.workers()
        ]

    rows = obj.run(fetch)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "host", "pid", "channels", "busy", "running jobs", "started", "last seen")
    for w in rows:
        channels = w["channels"]
        running = w["running"]
        assert isinstance(running, list)
        table.add_row(
            *map(
                text,
                (
                    w["id"], w["host"], w["pid"],
                    "all" if channels is None else ",".join(channels),  # type: ignore[arg-type]
                    f"{len(running)}/{w['concurrency']}",
                    " ".join(map(str, running[:20])) + (" …" if len(running) > 20 else ""),
                    w["started_at"], w["last_seen"],
                ),
            )
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print(text("no worker is running"))
