"""``conveyor channels list|limit|pause|resume``."""

from __future__ import annotations

import json

import click
from rich.table import Table

from conveyor.cli.app import Ctx, console, fail, pass_ctx, text
from conveyor.errors import ValidationError
from conveyor.limits import ChannelLimits, Rate
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
            "limits": _limits_dict(c.limits),
        }
        for c in found
    ]
    if as_json:
        click.echo(json.dumps({"all_paused": state.everything, "channels": rows}, indent=2))
        return
    states = [s.value for s in JobState]
    table = Table("channel", "paused", *states, "oldest due", "limits")
    for c in found:
        cells = (c.name, "yes" if c.paused else "", *(c.counts[s] for s in states))
        table.add_row(*map(text, (*cells, iso(c.oldest_queued_at) or "", _limits_text(c.limits))))
    console.print(table)
    if state.everything:
        console.print(text("every channel is paused (conveyor channels resume --all)"))


def _limits_dict(limits: ChannelLimits | None) -> dict[str, object] | None:
    if limits is None:
        return None
    rate = limits.rate
    return {
        "concurrency": limits.concurrency,
        "rate": None if rate is None else {"n": rate.n, "per": rate.seconds},
        "fair_by": limits.fair_by,
    }


def _limits_text(limits: ChannelLimits | None) -> str:
    if limits is None:
        return ""
    parts = []
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency}")
    if limits.rate is not None:
        parts.append(f"rate {limits.rate.n}/{limits.rate.seconds:g}s")
    if limits.fair_by is not None:
        parts.append(f"fair by {limits.fair_by}")
    return ", ".join(parts)


def _rate(value: str | None) -> Rate | None:
    """``N/PER`` (``50/1s``, ``100/1m``) as a Rate; exit 2 when it is not one."""
    if value is None:
        return None
    n, sep, per = value.partition("/")
    try:
        if not sep or not n.strip().isdigit():
            raise ValidationError("")
        return Rate(int(n), per.strip())
    except ValidationError as exc:
        fail(f"--rate takes N/PER such as 50/1s or 100/1m, got {value!r} {exc}".rstrip(), code=2)


@channels.command("limit")
@click.argument("name")
@click.option("--concurrency", type=click.IntRange(1, 1_000_000), help="At most N running.")
@click.option("--rate", help="At most N starts per window: N/PER, e.g. 50/1s.")
@click.option("--fair-by", type=click.Choice(["tenant", "group"]), help="Round-robin by.")
@click.option("--clear", is_flag=True, help="Remove every limit of the channel.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_ctx
def channels_limit(
    obj: Ctx,
    name: str,
    concurrency: int | None,
    rate: str | None,
    fair_by: str | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Set channel NAME's limits (replacing the ones stored); every running worker obeys
    within one sweep interval. --clear removes them."""
    given = concurrency is not None or rate is not None or fair_by is not None
    if clear == given:
        fail("channels limit takes --concurrency/--rate/--fair-by, or --clear (not both)", code=2)
    parsed = _rate(rate)
    limits = obj.run(
        lambda queue: queue.set_channel_limits(
            name, concurrency=concurrency, rate=parsed, fair_by=fair_by
        )
    )
    if as_json:
        click.echo(json.dumps({"channel": name, "limits": _limits_dict(None if clear else limits)}))
    else:
        click.echo(f"channel {name}: " + (_limits_text(limits) or "no limits"))


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
