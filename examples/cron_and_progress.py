"""Cron schedules, progress and events on SQLite; runs in a few seconds and exits by itself.

    python examples/cron_and_progress.py

- ``tick`` is an interval schedule (``every=``) that fires once a second;
- ``import-rows`` (async) and ``resize`` (plain ``def``, run in a thread) report progress:
  the async handler awaits ``ctx.set_progress``, the sync one calls it without ``await``;
- ``queue.on(...)`` prints the events as this process's worker produces them.

The store is a temporary file, removed at the end.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import conveyor

TICKS_WANTED = 3


def build_queue(path: Path) -> conveyor.Queue:
    # A short sweep interval so schedules fire promptly in this demo (default 1 s).
    queue = conveyor.Queue(f"sqlite:///{path}", sweep_interval=0.25)

    @queue.job("tick", every=timedelta(seconds=1))
    async def tick(payload: dict, ctx: conveyor.Context) -> str:
        assert ctx.scheduled_for is not None
        return f"schedule {ctx.schedule!r}, tick {ctx.scheduled_for:%H:%M:%S}"

    @queue.job("import-rows", timeout=30)
    async def import_rows(payload: dict, ctx: conveyor.Context) -> dict:
        rows = payload["rows"]
        for done in range(1, rows + 1):
            await asyncio.sleep(0.05)  # pretend to import a row
            if done % (rows // 4) == 0:
                await ctx.set_progress(100 * done // rows)
        ctx.log.info("imported %d rows", rows)
        return {"rows": rows}

    @queue.job("resize")
    def resize(payload: dict, ctx: conveyor.Context) -> str:
        for pct in (50, 100):
            time.sleep(0.1)
            ctx.set_progress(pct)  # sync handler: no await
        return f"{payload['file']} resized"

    return queue


def show(event: conveyor.Event) -> None:
    extra = ""
    if event.type == "progress":
        extra = f" {event.data['progress']}%"
    elif event.type == "completed":
        extra = f" -> {event.data.get('result')}"
    print(f"{event.type:>10}  #{event.job_id:<3} {event.job_name}{extra}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        queue = build_queue(Path(tmp) / "jobs.db")
        queue.on("cron_fired", show)
        queue.on("progress", show)
        queue.on("completed", show)
        await queue.migrate()  # also stores the `tick` schedule

        importer = await queue.enqueue("import-rows", {"rows": 20})
        await queue.enqueue("resize", {"file": "cat.jpg"})

        worker = queue.worker(concurrency=4)
        runner = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            ticks = await queue.list_jobs(name="tick", state="completed")
            counts = await queue.counts()
            if len(ticks) >= TICKS_WANTED and counts["queued"] + counts["running"] == 0:
                break
        await worker.stop()
        await runner

        job = await queue.get_job(importer)
        assert job is not None and job.state == conveyor.JobState.COMPLETED
        logs = await queue.get_job_logs(importer)
        print(
            f"\nimport-rows: progress {job.progress}%, result {job.result}, log {logs[0].message!r}"
        )
        for schedule in await queue.list_cron():
            print(
                f"schedule {schedule.name!r} ({schedule.expression}) next at {schedule.next_run_at}"
            )
        ticks = await queue.list_jobs(name="tick", state="completed")
        print(f"{len(ticks)} ticks ran")
        await queue.close()
        assert len(ticks) >= TICKS_WANTED, "the schedule should have fired every second"


if __name__ == "__main__":
    asyncio.run(main())
