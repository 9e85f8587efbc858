"""procrastinate: worker side (``procrastinate --app=bench.apps.procrastinate_app.app``)."""

from __future__ import annotations

import os

import procrastinate

from bench import probe


def build(conninfo: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop(n: int) -> None:
        await probe.run_async(n)

    return app


app = build(os.environ.get("BENCH_PG_URL", ""))
