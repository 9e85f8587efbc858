"""``conveyor channels list|pause|resume``."""

from __future__ import annotations

import json

import click
from rich.table import Table

from conveyor.cli.app import Ctx, console, fail, pass_ctx, text
from conveyor.models import ChannelInfo, JobState, PauseState
from conveyor.queue import Queue
from conveyor.serialize import iso

__all__ = ["channels"]


@click.group()
def channels() -> None:
    """List, pause and resume channels."""


@channels.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def channels_list(obj: Ctx, as_json: bool) -> None:
    """Every channel with jobs or a pause: jobs per state, paused, oldest due job."""

    async def fetch(queue: Queue) -> tuple[list[ChannelInfo], PauseState]:
        return await queue.channels(), await queue.pause_state()

    found, state = obj.run(fetch)
    rows = [
        {
            "name": c.name,
            "paused": c.paused,
            "counts": dict(c.counts),
            "oldest_queued_at": iso(c.oldest_queued_at),
        }
        for c in found
    ]
    if as_json:
        click.echo(json.dumps({"all_paused": state.everything, "channels": rows}, indent=2))
        return
    states = [s.value for s in JobState]
    table = Table("channel", "paused", *states, "oldest due")
    for c in found:
        cells = (c.name, "yes" if c.paused else "", *(c.counts[s] for s in states))
        table.add_row(*map(text, (*cells, iso(c.oldest_queued_at) or "")))
    console.print(table)
    if state.everything:
        console.print(text("every channel is paused (conveyor channels resume --all)"))


def _target(name: str | None, every: bool, verb: str) -> str | None:
    """The channel to act on (None: all of them); exit 2 unless exactly one is named."""
    if (name is None) == (not every):
        fail(f"channels {verb} takes a channel NAME or --all (not both)", code=2)
    return name


def _done(channel: str | None, paused: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"channel": channel, "paused": paused}))
        return
    what = "every channel" if channel is None else f"channel {channel}"
    click.echo(f"{what} {'paused' if paused else 'resumed'}")


@channels.command("pause")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Pause every channel.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def channels_pause(obj: Ctx, name: str | None, every: bool, as_json: bool) -> None:
    """Stop workers from starting jobs of channel NAME (or of every channel)."""
    channel = _target(name, every, "pause")
    obj.run(lambda queue: queue.pause(channel))
    _done(channel, True, as_json)


@channels.command("resume")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Resume every channel.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def channels_resume(obj: Ctx, name: str | None, every: bool, as_json: bool) -> None:
    """Let workers start jobs of channel NAME (or of every channel) again."""
    channel = _target(name, every, "resume")
    obj.run(lambda queue: queue.resume(channel))
    _done(channel, False, as_json)
