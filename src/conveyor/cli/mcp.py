"""``conveyor mcp`` (serve the MCP server) and ``conveyor install-mcp`` (write a client's
configuration for it into a project).

The client configuration launches this same installation of conveyor (the ``conveyor``
script beside this Python, else ``python -m conveyor``) with ``--app-dir``, so it works
whatever directory the client starts it in.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from conveyor.cli import logs
from conveyor.cli.app import Ctx, err_console, fail, load_app, pass_ctx
from conveyor.errors import ConveyorError, ValidationError
from conveyor.queue import Queue
from conveyor.validation import validate_name

__all__ = ["CLIENTS", "client_config", "install_mcp", "mcp"]

#: For each client: its project configuration file and the key holding the servers.
CLIENTS = {
    "claude": (".mcp.json", "mcpServers"),
    "cursor": (".cursor/mcp.json", "mcpServers"),
    "vscode": (".vscode/mcp.json", "servers"),
}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _csv(values: tuple[str, ...]) -> list[str]:
    """Repeated and comma-separated names as one list, in order, without repeats."""
    out = [part.strip() for item in values for part in item.split(",") if part.strip()]
    return list(dict.fromkeys(out))


def _launcher() -> list[str]:
    """How a client starts this installation's ``conveyor``."""
    bindir = Path(sys.executable).parent
    for name in ("conveyor", "conveyor.exe"):
        script = bindir / name
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    return [sys.executable, "-m", "conveyor"]


def client_config(
    obj: Ctx,
    app: str | None,
    app_dir: Path,
    *,
    allow_write: bool,
    allow_enqueue: list[str],
    tenant: str | None,
) -> dict[str, Any]:
    """The server entry of a client configuration: ``{"command", "args", "env"}``,
    ``env`` holding the store settings given to this command (``CONVEYOR_URL`` …)."""
    command, *args = _launcher()
    args.append("mcp")
    if app:
        args += [app, "--app-dir", str(app_dir)]
    if allow_write:
        args.append("--allow-write")
    for name in allow_enqueue:
        args += ["--allow-enqueue", name]
    if tenant is not None:
        args += ["--tenant", tenant]
    env = {
        var: value
        for var, value in (
            ("CONVEYOR_URL", _absolute(obj.url)),
            ("CONVEYOR_SCHEMA", obj.schema),
            ("CONVEYOR_PREFIX", obj.prefix),
        )
        if value
    }
    return {"command": command, "args": args, "env": env}


def _absolute(url: str | None) -> str | None:
    """An SQLite URL with its relative path made absolute (the client starts the server
    in a directory of its own choosing); other URLs as they are."""
    if not url or not url.startswith("sqlite:///") or url.startswith("sqlite:////"):
        return url
    path, sep, query = url[len("sqlite:///") :].partition("?")
    if not path or path == ":memory:":
        return url
    return f"sqlite:///{os.path.abspath(path)}{sep}{query}"


def _check_app(obj: Ctx, app: str | None, app_dir: Path) -> Queue:
    """Load APP from ``app_dir`` (bad usage when it cannot be), else the store's queue;
    one of them must be given (bad usage), or the configuration would name neither."""
    if not app and not obj.url:
        raise click.UsageError(
            "give the queue (module:queue, e.g. myapp.jobs:queue) or the store "
            "(--url or CONVEYOR_URL) the client configuration should use"
        )
    directory = str(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if app:
        try:
            return load_app(app)
        except click.BadParameter as exc:
            fail(exc.message, code=2)
        except ConveyorError as exc:
            fail(str(exc))
    return obj.queue()


def _scope_options(fn: Any) -> Any:
    """The options ``mcp`` and ``install-mcp`` share: what the server may do."""
    for option in reversed(
        (
            click.option(
                "--allow-write",
                is_flag=True,
                help="Serve the write tools too: retry_job, cancel_job, pause_channel, "
                "resume_channel (and enqueue with --allow-enqueue). Read-only without it.",
            ),
            click.option(
                "--allow-enqueue",
                multiple=True,
                metavar="NAME",
                help="A job name the enqueue tool may create (repeat or comma-separate; "
                "needs --allow-write). None: no enqueue.",
            ),
            click.option(
                "--tenant",
                help="Scope every tool to this tenant; queue-wide tools (counts, list_cron, "
                "pause/resume_channel) are refused.",
            ),
        )
    ):
        fn = option(fn)
    return fn


def _scope(allow_write: bool, allow_enqueue: tuple[str, ...], tenant: str | None) -> list[str]:
    """The allow-list, after checking the scope options fit together (exit 2 if not)."""
    names = _csv(allow_enqueue)
    if names and not allow_write:
        raise click.UsageError("--allow-enqueue needs --allow-write")
    try:
        for name in names:
            validate_name(name, "job name")
        if tenant is not None:
            validate_name(tenant, "tenant")
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    return names


@click.command()
@click.argument("app", required=False)
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio: the client starts this command; http: streamable HTTP at /mcp.",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="HTTP: interface to listen on."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="HTTP: port."
)
@click.option(
    "--token",
    envvar="CONVEYOR_MCP_TOKEN",
    help="HTTP: require Authorization: Bearer TOKEN. Required unless --host is a loopback "
    "address. [env CONVEYOR_MCP_TOKEN]",
)
@_scope_options
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory to import APP from (default: the current directory).",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the client configuration (JSON) that starts this server, and exit.",
)
@pass_ctx
def mcp(
    obj: Ctx,
    app: str | None,
    transport: str,
    host: str,
    port: int,
    token: str | None,
    allow_write: bool,
    allow_enqueue: tuple[str, ...],
    tenant: str | None,
    app_dir: Path | None,
    print_config: bool,
) -> None:
    """Serve the MCP server for APP (module:queue; or --app, else --url): tools for AI
    agents to list and inspect jobs, counts and cron schedules, and, with --allow-write,
    to retry, cancel, pause and enqueue allow-listed jobs (needs conveyor[mcp])."""
    names = _scope(allow_write, allow_enqueue, tenant)
    app = app or obj.app
    directory = (app_dir or Path.cwd()).resolve()
    if print_config:
        if transport != "stdio":
            raise click.UsageError("--print-config describes a stdio server: drop --transport")
        _check_app(obj, app, directory)
        entry = client_config(
            obj, app, directory, allow_write=allow_write, allow_enqueue=names, tenant=tenant
        )
        click.echo(json.dumps({"mcpServers": {"conveyor": entry}}, indent=2))
        return
    token = token or None
    if transport == "http" and not token and not _is_loopback(host):
        raise click.UsageError("serving beyond localhost needs --token (or CONVEYOR_MCP_TOKEN)")
    logs.configure("text")
    try:
        from conveyor.mcp import build_server, serve_http, serve_stdio
    except ImportError as exc:
        fail(f"the MCP server needs: pip install 'conveyor[mcp]' ({exc})")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    obj.app = app

    async def serve(queue: Queue) -> None:
        try:
            server = build_server(
                queue, allow_write=allow_write, allow_enqueue=names, tenant=tenant
            )
        except ConveyorError as exc:
            fail(str(exc), code=2)
        await queue.list_jobs(limit=1)  # an unreachable store fails now, in one line
        if transport == "stdio":
            await serve_stdio(server)
        else:
            err_console.print(
                f"MCP server: http://{host}:{port}/mcp", markup=False, highlight=False
            )
            await serve_http(server, host=host, port=port, token=token)

    obj.run(serve)


@click.command("install-mcp")
@click.argument("app", required=False)
@click.option(
    "--client",
    type=click.Choice(list(CLIENTS)),
    default="claude",
    show_default=True,
    help="claude: .mcp.json (Claude Code); cursor: .cursor/mcp.json; vscode: .vscode/mcp.json.",
)
@click.option(
    "--path",
    "project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    help="The project directory (default: the current one); APP is imported from it.",
)
@click.option(
    "--name", default="conveyor", show_default=True, help="The server's name in the file."
)
@_scope_options
@pass_ctx
def install_mcp(
    obj: Ctx,
    app: str | None,
    client: str,
    project: Path,
    name: str,
    allow_write: bool,
    allow_enqueue: tuple[str, ...],
    tenant: str | None,
) -> None:
    """Add the MCP server for APP to a coding agent's project configuration, keeping the
    other servers there (read-only unless --allow-write)."""
    names = _scope(allow_write, allow_enqueue, tenant)
    app = app or obj.app
    project = project.resolve()
    _check_app(obj, app, project)
    entry = client_config(
        obj, app, project, allow_write=allow_write, allow_enqueue=names, tenant=tenant
    )
    relative, key = CLIENTS[client]
    if client == "vscode":
        entry = {"type": "stdio", **entry}
    target = project / relative
    data = _read_config(target)
    servers = data.setdefault(key, {})
    if not isinstance(servers, dict):
        fail(f"{target}: {key!r} is not a JSON object; nothing was written")
    verb = "updated" if name in servers else "added"
    servers[name] = entry
    _write_atomically(target, json.dumps(data, indent=2) + "\n")
    click.echo(f"{verb} MCP server {name!r} in {target}")
    url = entry["env"].get("CONVEYOR_URL", "")
    if urlsplit(url).password:
        err_console.print(
            f"note: {relative} now holds CONVEYOR_URL with its password: keep it out of "
            "version control",
            markup=False,
            highlight=False,
        )


def _read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when it is missing or empty); exit 1 on anything
    else, so a file the user wrote is never overwritten by mistake."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix or remove it: nothing was written"
        )
    if not isinstance(data, dict):
        fail(f"{path} does not hold a JSON object; nothing was written")
    return data


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        fail(f"cannot write {path}: {exc}")
