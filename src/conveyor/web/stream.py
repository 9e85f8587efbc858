"""The status stream for browsers: ``GET {status_path}/{id}/stream`` (Server-Sent Events)
and the ES module that reads it, ``{status_path}/conveyor.js``.

The stream polls the job in the store (``queue.get_job(id, tenant=…)``, every
``interval`` seconds) and sends an ``update`` event whenever its status answer changed.
Polling the store, rather than listening to an event stream, sees every change made by
any process on every backend (progress included), needs no listener shared between
requests, and costs one primary-key read per open stream and interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import StreamingResponse

from conveyor.errors import BackendError
from conveyor.models import Job, JobState
from conveyor.web.serialize import encode_json, job_status

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from conveyor.queue import Queue

__all__ = [
    "FINISHED",
    "KEEPALIVE",
    "EventStream",
    "script",
    "script_etag",
    "sse",
    "watch",
]

log = logging.getLogger("conveyor")

#: Seconds without an event after which a comment line keeps proxies from closing the
#: connection.
KEEPALIVE = 15.0
#: The states that end a stream with ``done``.
FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
#: What a browser waits before reconnecting an ``EventSource`` that lost its connection.
RECONNECT_MS = 3000
GONE = {"error": {"code": "not_found", "message": "job not found"}}


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event: ``event: NAME`` and its data as one line of JSON."""
    return b"event: " + event.encode() + b"\ndata: " + encode_json(data) + b"\n\n"


async def watch(
    queue: Queue, job: Job, tenant: str | None, interval: float
) -> AsyncIterator[bytes]:
    """The stream of ``job`` (already read, and readable by the caller):

    - ``update`` with its status at once, then whenever the status answer changes;
    - ``done`` with the final status when it is completed, failed or cancelled, then
      the end;
    - ``gone`` (the 404 body) if the job is deleted while watched (``remove_on_complete``,
      ``clean``, retention), then the end;
    - a comment line after :data:`KEEPALIVE` seconds without an event.

    A store that fails to answer skips that poll; the stream goes on.
    """
    loop = asyncio.get_running_loop()
    status = job_status(job)
    yield f"retry: {RECONNECT_MS}\n\n".encode() + sse("update", status)
    quiet_since = loop.time()
    state = job.state
    while state not in FINISHED:
        await asyncio.sleep(interval)
        try:
            fresh = await queue.get_job(job.id, tenant=tenant)
        except BackendError as exc:
            log.warning("web: status stream of job %s: the job store failed: %s", job.id, exc)
        else:
            if fresh is None:
                yield sse("gone", GONE)
                return
            new = job_status(fresh)
            state = fresh.state
            if new != status:
                status = new
                quiet_since = loop.time()
                yield sse("update", status)
                continue
        if loop.time() - quiet_since >= KEEPALIVE:
            quiet_since = loop.time()
            yield b": keep-alive\n\n"
    yield sse("done", status)


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that stops as soon as the client disconnects
    (whatever ASGI version the server speaks), and closes its generator then, so that
    nothing it started lives on."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(
            content,
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            },
        )
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    pass  # the client went away while we wrote
                except Exception:  # the answer has started: nothing else can be said
                    log.exception("web: a status stream failed")
                finally:
                    group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


@cache
def script() -> bytes:
    """``conveyor.js``: ``watchJob(id, {onUpdate, onDone, onError, basePath})``."""
    return resources.files("conveyor.web").joinpath("conveyor.js").read_bytes()


@cache
def script_etag() -> str:
    return '"' + hashlib.sha256(script()).hexdigest()[:32] + '"'
