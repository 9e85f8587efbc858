"""``conveyor init``: scaffold a jobs module and the settings for one backend."""

from __future__ import annotations

import keyword
import shlex
from pathlib import Path

import click

from conveyor.cli.app import fail

__all__ = ["init"]

#: The store each backend's scaffold points at when ``CONVEYOR_URL`` is not set.
DEFAULT_URLS = {
    "sqlite": "sqlite:///conveyor.db",
    "postgres": "postgresql://postgres@localhost:5432/app",
    "redis": "redis://localhost:6379/0",
}
EXTRAS = {"sqlite": None, "postgres": "postgres", "redis": "redis"}
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}

JOBS_MODULE = '''\
"""Background jobs, run by conveyor workers.

Run a worker:
    conveyor worker {spec}
Enqueue a job from the shell:
    conveyor --app {spec} enqueue send-welcome --payload '{{"email": "a@b.c"}}'
Enqueue from your code:
    job_id = await send_welcome.enqueue({{"email": "a@b.c"}})
    job_id = send_welcome.enqueue_sync({{"email": "a@b.c"}})  # from sync code
"""

from __future__ import annotations

import os
from typing import Any

import conveyor

# The store ({label}): CONVEYOR_URL (see .env.example), else this default.
DEFAULT_URL = "{url}"
queue = conveyor.Queue(os.environ.get("CONVEYOR_URL", DEFAULT_URL))


@queue.job("send-welcome", attempts=3, timeout=30)
async def send_welcome(
    payload: dict[str, Any], ctx: conveyor.Context
) -> dict[str, Any]:
    """Payloads and results are JSON. A job can run more than once (at-least-once
    delivery): keep its side effects safe to repeat."""
    ctx.log.info("welcoming %s", payload["email"])
    await ctx.set_progress(100)
    return {{"welcomed": payload["email"]}}
'''

ENV_HEADER = """\
# conveyor reads its settings from the environment, not from this file: copy it to .env
# and load it with your tool (docker compose, direnv, python-dotenv), or export the lines.

"""

ENV_COMMON = """\

# Optional:
# CONVEYOR_CONCURRENCY=10            # jobs a worker runs at once
# CONVEYOR_CHANNELS=emails,default   # only these channels (default: all)
# CONVEYOR_LEASE=30s                 # how long a claim lives without a heartbeat
# CONVEYOR_KEEP_COMPLETED=1d         # retention of completed jobs
# CONVEYOR_KEEP_FAILED=7d            # retention of failed jobs
# CONVEYOR_WORKER=false              # in web processes that only enqueue and serve status
"""

ENV_BACKEND = {
    "sqlite": """\
# SQLite: one file, no server; workers on this machine share it. A relative path is
# relative to the current directory (sqlite:////abs/path/jobs.db for an absolute one).
CONVEYOR_URL=sqlite:///conveyor.db
""",
    "postgres": """\
# PostgreSQL (pip install 'conveyor[postgres]'): workers on many machines, and enqueue
# inside your own transaction (connection=).
CONVEYOR_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME
# the schema conveyor's tables live in
CONVEYOR_SCHEMA=conveyor
""",
    "redis": """\
# Redis (pip install 'conveyor[redis]'): workers on many machines. Keep persistence on
# (appendonly yes) and maxmemory-policy noeviction.
CONVEYOR_URL=redis://HOST:6379/0
# the prefix of conveyor's keys
CONVEYOR_PREFIX=conveyor
""",
}


def _module_path(module: str) -> Path:
    """``myapp.jobs`` → ``myapp/jobs.py``; exit 2 for a name Python cannot import."""
    parts = module.split(".")
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        raise click.BadParameter(
            f"{module!r} is not a Python module name (e.g. jobs or myapp.jobs)",
            param_hint="'--module'",
        )
    return Path(*parts[:-1], parts[-1] + ".py")


@click.command()
@click.option(
    "--backend",
    type=click.Choice(sorted(DEFAULT_URLS)),
    default="sqlite",
    show_default=True,
    help="The store the scaffold is set up for.",
)
@click.option(
    "--path",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to write into (created if missing).",
)
@click.option(
    "--module", default="jobs", show_default=True, help="Name of the jobs module to create."
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(backend: str, directory: Path, module: str, force: bool) -> None:
    """Scaffold a jobs module (a Queue and one example job) and a .env.example for
    BACKEND, then print the commands that run it."""
    module_file = _module_path(module)
    files = {
        module_file: JOBS_MODULE.format(
            spec=f"{module}:queue", url=DEFAULT_URLS[backend], label=LABELS[backend]
        ),
        Path(".env.example"): ENV_HEADER + ENV_BACKEND[backend] + ENV_COMMON,
    }
    # Packages of a dotted module: an __init__.py where there is none (never overwritten).
    packages = [
        Path(*module_file.parts[:i], "__init__.py") for i in range(1, len(module_file.parts))
    ]
    existing = [rel for rel in files if (directory / rel).exists()]
    if existing and not force:
        names = ", ".join(str(directory / rel) for rel in existing)
        fail(f"{names} already exist{'s' if len(existing) == 1 else ''}: use --force to overwrite")
    created: list[Path] = []
    try:
        for rel in packages:
            if not (directory / rel).exists():
                (directory / rel).parent.mkdir(parents=True, exist_ok=True)
                (directory / rel).write_text("")
                created.append(rel)
        for rel, content in files.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(content, encoding="utf-8")
            created.append(rel)
    except OSError as exc:
        fail(f"cannot write into {directory}: {exc.strerror or exc}")
    for rel in created:
        click.echo(f"created {directory / rel}")
    click.echo("")
    click.echo(f"Next steps ({LABELS[backend]}):")
    spec = f"{module}:queue"
    steps: list[tuple[str, str]] = []
    if directory.resolve() != Path.cwd().resolve():
        steps.append((f"cd {shlex.quote(str(directory))}", ""))
    extra = EXTRAS[backend]
    if extra:
        steps.append((f"pip install 'conveyor[{extra}]'", ""))
        scheme = DEFAULT_URLS[backend].split(":", 1)[0]
        steps.append((f"export CONVEYOR_URL={scheme}://…", "your store (see .env.example)"))
    steps += [
        (f"conveyor --app {spec} migrate", "create the store's schema"),
        (
            f"conveyor --app {spec} enqueue send-welcome --payload "
            '\'{"email": "ada@example.com"}\'',
            "enqueue a job",
        ),
        (f"conveyor worker {spec}", "run it (Ctrl-C drains and stops)"),
    ]
    for command, note in steps:
        if note:
            click.echo(f"  # {note}")
        click.echo(f"  {command}")
