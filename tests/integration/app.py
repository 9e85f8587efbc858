"""The app real worker processes run in integration tests (configured by CONVEYOR_*)."""

from __future__ import annotations

import asyncio
import os
import time

import conveyor

queue = conveyor.Queue()


def _mark(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


@queue.job("slow", attempts=3)
async def slow(payload: dict, ctx: conveyor.Context) -> dict:
    """Marks start and end in a probe file and in its job's log (``ctx.log``); sleeps
    ``seconds[attempt-1]``."""
    _mark(payload["probe"], f"start {ctx.job_id} {ctx.attempt} {os.getpid()}")
    ctx.log.info(f"start {ctx.attempt} {os.getpid()}")
    seconds = payload["seconds"][min(ctx.attempt, len(payload["seconds"])) - 1]
    await asyncio.sleep(seconds)
    _mark(payload["probe"], f"end {ctx.job_id} {ctx.attempt} {os.getpid()}")
    ctx.log.info(f"end {ctx.attempt} {os.getpid()}")
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@queue.job("sync-slow", attempts=3)
def sync_slow(payload: dict, ctx: conveyor.Context) -> dict:
    """A blocking handler; checks ctx.cancelled while it waits."""
    _mark(payload["probe"], f"start {ctx.job_id} {ctx.attempt} {os.getpid()}")
    deadline = time.monotonic() + payload["seconds"][min(ctx.attempt, len(payload["seconds"])) - 1]
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    _mark(payload["probe"], f"end {ctx.job_id} {ctx.attempt} {os.getpid()}")
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@queue.job("count", attempts=3)
async def count(payload: dict, ctx: conveyor.Context) -> int:
    """Records one line per execution in a probe file."""
    _mark(payload["probe"], f"run {ctx.job_id} {ctx.attempt} {os.getpid()}")
    if payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])
    return int(payload["n"])


def enqueue_many_from_process(probe: str, start: int, n: int) -> None:
    """Run in a child process: enqueue one by one from sync code (enqueue_sync)."""
    for i in range(start, start + n):
        queue.enqueue_sync("count", {"probe": probe, "n": i, "sleep": 0.01}, attempts=3)


if os.environ.get("CONVEYOR_TEST_TICK_PROBE"):  # only the cron test wants this schedule

    @queue.job("tick", every=__import__("datetime").timedelta(seconds=1), allow_overlap=True)
    async def tick(payload: dict, ctx: conveyor.Context) -> float | None:
        """Fired by its own every-second schedule in whichever process wins each tick."""
        path = os.environ["CONVEYOR_TEST_TICK_PROBE"]
        if ctx.scheduled_for is not None:
            _mark(path, f"tick {ctx.scheduled_for.timestamp()} {os.getpid()}")
        return ctx.scheduled_for.timestamp() if ctx.scheduled_for else None


@queue.job("durable-steps", attempts=1)
async def durable_steps(payload: dict, ctx: conveyor.Context) -> dict:
    """Step one marks the probe and returns; step two marks, then sleeps ``seconds``
    (long the first time, so a test can SIGKILL the worker inside it)."""

    async def one() -> int:
        _mark(payload["probe"], f"one {ctx.job_id} {ctx.attempt}")
        return 1

    async def two() -> int:
        _mark(payload["probe"], f"two {ctx.job_id} {ctx.attempt}")
        await asyncio.sleep(payload["seconds"][min(ctx.attempt, len(payload["seconds"])) - 1])
        return 2

    a = await ctx.step("one", one)
    b = await ctx.step("two", two)
    return {"sum": a + b, "attempt": ctx.attempt}


@queue.job("await-approval")
async def await_approval(payload: dict, ctx: conveyor.Context) -> dict:
    """Creates a token, writes its id to the probe, waits for it."""
    token = await ctx.create_token(timeout=payload.get("timeout"))
    await ctx.step("ask", lambda: _mark(payload["probe"], f"token {ctx.job_id} {token.id}"))
    decision = await ctx.wait_for_token(token)
    return {"ok": decision.ok, "data": decision.data}


def complete_token_from_process(token_id: str, data: object) -> bool:
    """Run in a child process: complete a token from sync code, as a web app would."""

    async def go() -> bool:
        try:
            return await queue.complete_token(token_id, data)
        finally:
            await queue.close()

    return asyncio.run(go())


@queue.job("limited-group", concurrency=conveyor.Limit(3, key="group"), attempts=3)
async def limited_group(payload: dict, ctx: conveyor.Context) -> None:
    """Marks start and end (wall time) so a test can check the overlap per group."""
    _mark(
        payload["probe"], f"start {ctx.job_id} {payload['group']} {time.time():.6f} {os.getpid()}"
    )
    seconds = payload.get("seconds", 0.2)
    if isinstance(seconds, list):  # per attempt
        seconds = seconds[min(ctx.attempt, len(seconds)) - 1]
    await asyncio.sleep(seconds)
    _mark(payload["probe"], f"end {ctx.job_id} {payload['group']} {time.time():.6f} {os.getpid()}")


@queue.job("rated", rate=conveyor.Rate(10, per="1s"))
async def rated(payload: dict, ctx: conveyor.Context) -> None:
    _mark(payload["probe"], f"start {ctx.job_id} {time.time():.6f} {os.getpid()}")


@queue.job("fair-share", channel="shared")
async def fair_share(payload: dict, ctx: conveyor.Context) -> None:
    _mark(payload["probe"], f"start {ctx.job_id} {ctx.tenant} {time.time():.6f}")
    await asyncio.sleep(payload.get("seconds", 0.005))


@queue.job("batch-member", attempts=2)
async def batch_member(payload: dict, ctx: conveyor.Context) -> None:
    await asyncio.sleep(payload.get("seconds", 0.002))
    _mark(payload["probe"], f"member {ctx.job_id} {time.time():.6f} {os.getpid()}")


@queue.job("batch-done")
async def batch_done(payload: dict, ctx: conveyor.Context) -> None:
    counts = ctx.batch or {}
    _mark(
        payload["probe"],
        f"callback {ctx.job_id} {time.time():.6f} {counts.get('completed')} {counts.get('total')}",
    )
