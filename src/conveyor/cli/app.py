"""The ``conveyor`` group and what every command shares: the global options, loading
the queue, running a coroutine on it, and console output."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from conveyor.errors import ConveyorError
from conveyor.queue import Queue

__all__ = ["Ctx", "console", "err_console", "fail", "load_app", "main", "pass_ctx", "run"]

T = TypeVar("T")
# Piped output (grep, less) keeps whole values instead of rich's 80-column truncation.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def fail(message: str, *, highlight: bool = False) -> NoReturn:
    """Print ``error: message`` on stderr and exit 1."""
    err_console.print(f"[red]error:[/red] {message}", highlight=highlight)
    sys.exit(1)


def load_app(spec: str) -> Queue:
    """``module:attribute`` → the Queue it names (the cwd is importable, like uvicorn).

    The attribute may be a dotted path, or a callable returning the Queue.

    Raises:
        click.BadParameter: ``spec`` is malformed or names no Queue (exit code 2).
    """
    if ":" not in spec:
        raise click.BadParameter(f"{spec!r} is not module:attribute (e.g. myapp.jobs:queue)")
    module_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}")
    if callable(obj) and not isinstance(obj, Queue):
        obj = obj()
    if not isinstance(obj, Queue):
        raise click.BadParameter(f"{spec} is a {type(obj).__name__}, not a conveyor.Queue")
    return obj


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(coro_fn())``; a :class:`ConveyorError` becomes ``error: …`` and exit 1."""
    try:
        return asyncio.run(coro_fn())
    except ConveyorError as exc:
        fail(str(exc))


class Ctx:
    """The group's options, handed to every command by :data:`pass_ctx`.

    Args:
        app: ``module:queue`` (``--app``); a command's APP argument replaces it.
        url, schema, prefix: build a Queue from these when there is no ``app``.
    """

    def __init__(self, app: str | None, url: str | None, schema: str | None, prefix: str | None):
        self.app, self.url, self.schema, self.prefix = app, url, schema, prefix

    def queue(self) -> Queue:
        """The queue to act on; exit 1 when it cannot be built, 2 on a bad ``app``."""
        try:
            if self.app:
                return load_app(self.app)
            return Queue(self.url, schema=self.schema, prefix=self.prefix)
        except ConveyorError as exc:
            fail(str(exc))

    def run(self, work: Callable[[Queue], Awaitable[T]]) -> T:
        """Build the queue, ``await work(queue)`` then close it, and return the result
        (a ConveyorError exits 1, see :func:`run`)."""
        queue = self.queue()

        async def go() -> T:
            try:
                return await work(queue)
            finally:
                await queue.close()

        return run(go)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="conveyor")
@click.option(
    "--app",
    envvar="CONVEYOR_APP",
    help="module:queue to use (e.g. myapp.jobs:queue). [env CONVEYOR_APP]",
)
@click.option(
    "--url", envvar="CONVEYOR_URL", help="Store URL when no --app is given. [env CONVEYOR_URL]"
)
@click.option("--schema", envvar="CONVEYOR_SCHEMA", help="PostgreSQL schema. [env CONVEYOR_SCHEMA]")
@click.option("--prefix", envvar="CONVEYOR_PREFIX", help="Redis key prefix. [env CONVEYOR_PREFIX]")
@click.pass_context
def main(
    ctx: click.Context, app: str | None, url: str | None, schema: str | None, prefix: str | None
) -> None:
    """conveyor: durable background jobs on SQLite, PostgreSQL or Redis."""
    ctx.obj = Ctx(app, url, schema, prefix)
