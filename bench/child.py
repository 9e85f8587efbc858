"""One (system, scenario, repetition) cell in a fresh process; writes one JSON file.

Usage: python -m bench.child SYSTEM SCENARIO REP --scale X --workdir DIR --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from bench.adapters.base import Context
from bench.config import Sizes
from bench.scenarios import SCENARIOS
from bench.systems import adapter_class


async def run_cell(
    system: str, scenario: str, rep: int, scale: float, workdir: Path
) -> dict[str, Any]:
    cell: dict[str, Any] = {"system": system, "scenario": scenario, "rep": rep, "scale": scale}
    started = time.time()
    adapter = None
    try:
        adapter = adapter_class(system)()
        cell.update(family=adapter.family, config=adapter.config)
        ctx = Context(workdir=workdir, rep=rep)
        await adapter.setup(ctx)
        try:
            cell["rows"] = await SCENARIOS[scenario](adapter, ctx, Sizes().scaled(scale))
        finally:
            await adapter.teardown()
    except Exception as exc:  # recorded in the results; the run goes on with the next cell
        cell["error"] = f"{type(exc).__name__}: {exc}"
        cell["traceback"] = traceback.format_exc()[-4000:]
    cell["wall_s"] = time.time() - started
    return cell


async def _main_task(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM (the driver's timeout) cancels the cell, so its finally-blocks stop the
    # workers and drop the databases instead of leaving them behind.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_cell(args.system, args.scenario, args.rep, args.scale, args.workdir)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("system")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("rep", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cell = asyncio.run(_main_task(args))
    if cell.get("error"):
        cell["worker_logs"] = {
            p.name: p.read_text(errors="replace")[-2000:] for p in args.workdir.glob("*.worker.log")
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cell, indent=1, default=str))


if __name__ == "__main__":
    main()
