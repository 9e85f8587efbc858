"""``conveyor worker``: run a worker in this process, with its signal handling."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

import click

from conveyor.cli import logs
from conveyor.cli.app import Ctx, fail, pass_ctx
from conveyor.queue import Queue

if TYPE_CHECKING:
    from conveyor.web.metrics import MetricsServer

__all__ = ["worker"]

log = logging.getLogger("conveyor")


def _csv(value: tuple[str, ...] | str | None) -> list[str] | None:
    """Repeated and comma-separated values as one list; None when there are none."""
    if not value:
        return None
    items = value if isinstance(value, tuple) else (value,)
    out = [part.strip() for item in items for part in item.split(",") if part.strip()]
    return out or None


@click.command()
@click.argument("app", required=False)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    envvar="CONVEYOR_CONCURRENCY",
    help="Jobs run at once. [env CONVEYOR_CONCURRENCY]",
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    envvar="CONVEYOR_CHANNELS",
    help="Only these channels (repeat or comma-separate; default all). [env CONVEYOR_CHANNELS]",
)
@click.option(
    "--include",
    multiple=True,
    envvar="CONVEYOR_INCLUDE",
    help="Only these job names. [env CONVEYOR_INCLUDE]",
)
@click.option(
    "--exclude",
    multiple=True,
    envvar="CONVEYOR_EXCLUDE",
    help="Never these job names. [env CONVEYOR_EXCLUDE]",
)
@click.option(
    "--ordered/--unordered",
    default=True,
    show_default=True,
    envvar="CONVEYOR_ORDERED",
    help="--unordered: claim due jobs in any order, for throughput (priority order is "
    "not promised; a store keeps it where that costs nothing). [env CONVEYOR_ORDERED=false]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEYOR_TIMEOUT",
    help="Default job timeout in seconds. [env CONVEYOR_TIMEOUT]",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="CONVEYOR_DRAIN_TIMEOUT",
    help="Seconds SIGTERM waits for running jobs. [env CONVEYOR_DRAIN_TIMEOUT]",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="CONVEYOR_METRICS_PORT",
    help="Serve this process's job metrics (Prometheus) on this port, at any path. Needs "
    "the web extra. [env CONVEYOR_METRICS_PORT]",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="CONVEYOR_METRICS_HOST",
    help="Address the metrics port listens on (0.0.0.0: every interface). "
    "[env CONVEYOR_METRICS_HOST]",
)
@click.option("--once", is_flag=True, help="Process what is due now, then exit.")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More logging: -v conveyor's debug lines, -vv every library's too.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (no line per job).")
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    envvar="CONVEYOR_LOG_FORMAT",
    help="Log lines on stderr: text, or one JSON object per line. [env CONVEYOR_LOG_FORMAT]",
)
@pass_ctx
def worker(
    obj: Ctx,
    app: str | None,
    concurrency: int,
    channels: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    ordered: bool,
    timeout: float | None,
    drain_timeout: float,
    metrics_port: int | None,
    metrics_host: str,
    once: bool,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Run a worker for APP (module:queue). SIGTERM/SIGINT drain; a second one stops at once.

    Logs one line per job outcome (INFO) and the store it uses at start, on stderr.
    """
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose contradict each other")
    logs.configure(log_format, verbose=verbose, quiet=quiet)
    if app:
        obj.app = app
    if not obj.app:
        raise click.UsageError("give the queue to run: conveyor worker myapp.jobs:queue")

    async def work(queue: Queue) -> None:
        w = queue.worker(
            channels=_csv(channels),
            concurrency=concurrency,
            include=_csv(include),
            exclude=_csv(exclude),
            ordered=ordered,
            timeout=timeout,
            drain_timeout=drain_timeout,
            handle_signals=True,
        )
        server = None if metrics_port is None else _serve_metrics(queue, metrics_host, metrics_port)
        try:
            if once:
                n = await w.run_once()
                log.info("processed %d job(s)", n, extra={"event": "processed", "processed": n})
            else:
                await w.run()
        finally:
            if server is not None:
                await server.close()

    obj.run(work, create=True)
    _exit_past_stuck_threads()


def _serve_metrics(queue: Queue, host: str, port: int) -> MetricsServer:
    """Start this process's metrics endpoint (job counters and histograms, process
    metrics); exit 1 when prometheus-client is missing or the port cannot be used."""
    try:
        from conveyor.web.metrics import MetricsServer
    except ImportError as exc:
        fail(f"--metrics-port needs prometheus-client: pip install 'conveyor[web]' ({exc})")
    try:
        server = MetricsServer(queue, host, port)
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "serving metrics on http://%s:%d/metrics",
        shown,
        server.port,
        extra={"event": "metrics_serving", "host": host, "port": server.port},
    )
    return server


def _exit_past_stuck_threads() -> None:
    """A sync handler that ignores ctx.cancelled keeps its thread; its job was already
    requeued, so exit instead of waiting for it (the interpreter would join it)."""
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        log.warning("%d handler thread(s) still running; exiting without them", len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
