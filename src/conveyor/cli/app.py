"""The ``conveyor`` group and what every command shares: the global options, loading
the queue, running a coroutine on it, and console output.

Every value the CLI prints through rich goes in as a :class:`rich.text.Text` (see
:func:`text`), never as markup: a job named ``reindex[users]`` or a payload holding
``[bold]`` or ``:smile:`` is shown as it is.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.highlighter import ReprHighlighter
from rich.text import Text

from conveyor.cli import logs
from conveyor.definitions import JobDefinition
from conveyor.errors import ConveyorError
from conveyor.queue import Queue

__all__ = [
    "Ctx",
    "console",
    "err_console",
    "fail",
    "load_app",
    "main",
    "missing_store",
    "pass_ctx",
    "run",
    "text",
]

T = TypeVar("T")
# Piped output (grep, less) keeps whole values instead of rich's 80-column truncation.
console = Console(width=None if sys.stdout.isatty() else 200)
# Messages are never wrapped: an error stays one line, whatever the terminal width.
err_console = Console(stderr=True, soft_wrap=True)
_highlight = ReprHighlighter()


def text(value: object) -> Text:
    """``value`` as plain text for rich: no markup, no emoji codes, nothing rewritten."""
    return Text(value if isinstance(value, str) else str(value))


def fail(message: str, *, highlight: bool = False, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line (``message`` shown as it is, its
    line breaks folded) and exit ``code`` (1; 2 for bad usage). Under ``--log-format
    json`` it is a JSON log line."""
    line = " ".join(message.split())
    if logs.json_enabled():
        logs.log_error(line)
    else:
        body = _highlight(text(line)) if highlight else text(line)
        err_console.print(Text.assemble(("error:", "red"), " ", body))
    sys.exit(code)


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
    if isinstance(obj, JobDefinition):
        raise click.BadParameter(_not_a_queue(spec, obj, module))
    if callable(obj) and not isinstance(obj, Queue):
        obj = obj()
    if not isinstance(obj, Queue):
        raise click.BadParameter(f"{spec} is a {type(obj).__name__}, not a conveyor.Queue")
    return obj


def _not_a_queue(spec: str, job: JobDefinition, module: Any) -> str:
    """Why a job definition is not the APP, and which attribute of its module is."""
    module_name = spec.split(":", 1)[0]
    queues = [name for name, value in vars(module).items() if isinstance(value, Queue)]
    queues.sort(key=lambda name: getattr(module, name) is not job.queue)  # its own first
    hint = f": use {module_name}:{queues[0]}" if queues else ""
    return f"{spec} is the job {job.name!r}, not a conveyor.Queue{hint}"


def missing_store(queue: Queue) -> str | None:
    """The absolute path of the SQLite file ``queue`` names when that file does not
    exist (None for an existing file, ``:memory:`` and the other stores). Read from the
    queue's settings, before anything connects: connecting would create the file."""
    url = queue.settings.url
    if queue.settings.store != "sqlite" or not url.startswith("sqlite://"):
        return None
    path = url[len("sqlite://") :].removeprefix("/").split("?", 1)[0]
    if not path or path == ":memory:" or os.path.exists(path):
        return None
    return os.path.abspath(path)


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

    def queue(self, *, must_exist: bool = False) -> Queue:
        """The queue to act on; exit 1 when it cannot be built (or, with ``must_exist``,
        when it names a SQLite file that does not exist), 2 on a bad ``app``."""
        try:
            if self.app:
                queue = load_app(self.app)
            else:
                queue = Queue(self.url, schema=self.schema, prefix=self.prefix)
        except ConveyorError as exc:
            fail(str(exc))
        except click.BadParameter as exc:
            fail(exc.message, code=2)
        if must_exist:
            path = missing_store(queue)
            if path is not None:
                fail(
                    f"no store at {path}: that SQLite file does not exist (check --url / "
                    "CONVEYOR_URL and the current directory; `conveyor migrate` creates it)"
                )
        return queue

    def run(self, work: Callable[[Queue], Awaitable[T]], *, create: bool = False) -> T:
        """Build the queue, ``await work(queue)`` then close it, and return the result
        (a ConveyorError exits 1, see :func:`run`). Only with ``create`` (``migrate``,
        ``worker``) may a missing SQLite file be created; otherwise it is an error."""
        queue = self.queue(must_exist=not create)

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
