"""``kill_on_timeout=True``: run a handler in a child process that can be killed.

The child imports the handler's module by name (so the handler must live in an importable
module, not ``__main__``), runs it, and sends progress, log lines and the outcome back
over a pipe. JSON only: nothing is pickled but plain strings, numbers and tuples.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from conveyor.context import Context, Control
from conveyor.errors import ValidationError

__all__ = ["ChildFailed", "run_in_child"]


class ChildFailed(Exception):
    """The handler raised in the child process (type and message preserved)."""

    def __init__(self, type_name: str, message: str, trace: str):
        super().__init__(message)
        self.type_name = type_name
        self.trace = trace


def _resolve(module: str, qualname: str) -> Callable[..., Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn: Callable[..., Any] = getattr(obj, "fn", obj)  # a JobDefinition wraps the function
    return fn


def _child_main(
    module: str, qualname: str, payload_json: str, meta: dict[str, Any], conn: Connection
) -> None:
    try:
        fn = _resolve(module, qualname)

        async def progress(value: int) -> None:
            conn.send(("progress", value))

        import time

        control = Control()
        ctx = Context(
            job_id=meta["job_id"],
            name=meta["name"],
            attempt=meta["attempt"],
            max_attempts=meta["max_attempts"],
            tenant=meta["tenant"],
            channel=meta["channel"],
            tags=tuple(meta["tags"]),
            priority=meta["priority"],
            clock=time.time,
            progress=progress,
            control=control,
        )
        payload = json.loads(payload_json)
        if inspect.iscoroutinefunction(fn):
            value = asyncio.run(fn(payload, ctx))
        else:
            value = fn(payload, ctx)
            if inspect.isawaitable(value):
                value = asyncio.run(value)  # type: ignore[arg-type]
        for at, level, message in control.logs:
            conn.send(("log", at, level, message))
        conn.send(("ok", json.dumps(value)))
    except BaseException as exc:  # the child reports everything, then exits
        try:
            for at, level, message in getattr(locals().get("control"), "logs", ()):
                conn.send(("log", at, level, message))
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


async def run_in_child(
    fn: Callable[..., Any],
    payload_json: str,
    ctx: Context,
    control: Control,
    deadline_check: Callable[[], bool],
) -> Any:
    """Run ``fn`` in a spawned process; kill it when ``deadline_check()`` says time is up
    or the awaiting task is cancelled. Returns the handler's (decoded) return value."""
    module, qualname = fn.__module__, fn.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        raise ValidationError(
            f"kill_on_timeout needs a handler importable by name; {module}.{qualname} is not "
            "(define it at module level in an importable module)"
        )
    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe(duplex=False)
    meta = {
        "job_id": ctx.job_id,
        "name": ctx.name,
        "attempt": ctx.attempt,
        "max_attempts": ctx.max_attempts,
        "tenant": ctx.tenant,
        "channel": ctx.channel,
        "tags": list(ctx.tags),
        "priority": ctx.priority,
    }
    proc = mp.Process(
        target=_child_main, args=(module, qualname, payload_json, meta, child), daemon=True
    )
    proc.start()
    child.close()
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(parent.fileno(), readable.set)
    try:
        while True:
            try:
                await asyncio.wait_for(readable.wait(), 0.05)
            except TimeoutError:
                if deadline_check():
                    raise TimeoutError("killed the child process at its timeout") from None
                if not proc.is_alive() and not parent.poll():
                    raise ChildFailed(
                        "ChildDied", f"child exited with code {proc.exitcode}", ""
                    ) from None
                continue
            readable.clear()
            while parent.poll():
                try:
                    msg = parent.recv()
                except EOFError:
                    raise ChildFailed(
                        "ChildDied", f"child exited with code {proc.exitcode}", ""
                    ) from None
                kind = msg[0]
                if kind == "progress":
                    await ctx.set_progress(msg[1])
                elif kind == "log":
                    control.logs.append((msg[1], msg[2], msg[3]))
                elif kind == "ok":
                    return json.loads(msg[1])
                else:
                    raise ChildFailed(msg[1], msg[2], msg[3])
    finally:
        loop.remove_reader(parent.fileno())
        parent.close()
        if proc.is_alive():
            proc.kill()
        await asyncio.to_thread(proc.join, 5)
