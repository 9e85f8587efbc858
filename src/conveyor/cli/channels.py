"""``conveyor channels pause|resume``.

There is no ``channels list``: the public :class:`conveyor.Queue` API has no way to
list channels (or which are paused); ``conveyor stats --channel C`` counts one.
"""

from __future__ import annotations

import json

import click

from conveyor.cli.app import Ctx, fail, pass_ctx

__all__ = ["channels"]


@click.group()
def channels() -> None:
    """Pause and resume channels."""


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
