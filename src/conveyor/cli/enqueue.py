"""``conveyor enqueue``, and :func:`parse_payload` that ``cron add|edit`` share."""

from __future__ import annotations

import json
from typing import Any

import click

from conveyor.cli.app import Ctx, fail, pass_ctx
from conveyor.errors import ConveyorError
from conveyor.queue import Queue
from conveyor.settings import parse_duration

__all__ = ["enqueue", "parse_payload"]


def parse_payload(value: str, option: str = "--payload") -> Any:
    """``value`` read as JSON; anything else is one line on stderr and exit 2."""
    try:
        return json.loads(value)
    except ValueError as exc:
        fail(f"{option} is not valid JSON: {exc}", code=2)


@click.command()
@click.argument("name")
@click.option("--payload", help="The payload, as JSON.  [default: null]")
@click.option("--priority", type=int, help="Lower runs first.")
@click.option("--delay", help="Run after this long: seconds or 30s, 5m, 1h, 7d.")
@click.option("--channel")
@click.option("--attempts", type=int, help="Maximum attempts.")
@click.option("--tenant")
@click.option("--group")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@click.option("--idempotency-key", help="A repeated key returns the existing job's id.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def enqueue(
    obj: Ctx,
    name: str,
    payload: str | None,
    priority: int | None,
    delay: str | None,
    channel: str | None,
    attempts: int | None,
    tenant: str | None,
    group: str | None,
    tags: tuple[str, ...],
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Enqueue job NAME and print its id."""
    data = None if payload is None else parse_payload(payload)
    seconds: float | None = None
    if delay is not None:
        try:
            seconds = parse_duration(delay, "--delay", positive=False)
        except ConveyorError as exc:
            fail(str(exc), code=2)

    async def go(queue: Queue) -> int:
        return await queue.enqueue(
            name,
            data,
            delay=seconds,
            priority=priority,
            channel=channel,
            attempts=attempts,
            idempotency_key=idempotency_key,
            tags=tags,
            group=group,
            tenant=tenant,
        )

    job_id = obj.run(go)
    click.echo(json.dumps({"id": job_id}) if as_json else str(job_id))
