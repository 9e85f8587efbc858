"""The hot path: script calls on a few connections of our own.

redis-py's asyncio client spends most of a short call on overhead rather than on the wire
(pool locks and hooks, a Task per write when a socket timeout is set, generic argument
encoding). Every script call (enqueue, claim, complete, heartbeat, ...) therefore goes
through :class:`Lane` instead, which still uses redis-py's ``Connection`` (and its hiredis
parser) but:

* keeps its idle connections in a deque: a call takes one (or connects a new one, at most
  ``max_connections`` at a time) and puts it back only after a clean reply. On any
  failure or cancellation while a reply is pending the connection is dropped, so a late
  reply can never be read as the answer to the next command; after a connection failure
  the idle ones are dropped too (they most likely died the same way);
* creates its connections without a socket timeout and bounds each whole call (connect,
  send, reply) with one ``asyncio.timeout``, which costs no extra Task;
* packs ``EVALSHA`` itself, with the constant part (script SHA, key count, the queue's
  ``KEYS[1]`` and ``ARGV[1]``) encoded once per script;
* turns every driver failure into :class:`~conveyor.errors.BackendError`.

After a ``SCRIPT FLUSH`` or a server restart, EVALSHA answers NOSCRIPT (the script did not
run); the lane then loads it and runs it once more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError

from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.scripts import Scripts
from conveyor.errors import BackendError

__all__ = ["Lane", "pack"]

_EMPTY = b"$0\r\n\r\n"


def _bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(head: bytes, head_items: int, args: Sequence[str]) -> bytes:
    """One command in RESP: ``head`` holds its first ``head_items`` items, already
    encoded; ``args`` follow."""
    parts = [b"*%d\r\n" % (head_items + len(args)), head]
    add = parts.append
    for arg in args:
        if arg:
            data = arg.encode()
            add(b"$%d\r\n" % len(data))
            add(data)
            add(b"\r\n")
        else:
            add(_EMPTY)
    return b"".join(parts)


async def _discard(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)  # closes at once: nothing to wait for


class Lane:
    """Script calls (and a few small commands) on the lane's own connections.

    Args:
        factory: makes a new, unconnected connection without a socket timeout.
        scripts: the script bodies and digests.
        keys: the queue's keys (``KEYS[1]`` and ``ARGV[1]`` of every script).
        timeout: seconds a whole call may take, connecting included.
        max_connections: connections open at once (further calls wait for one).
    """

    def __init__(
        self,
        factory: Callable[[], AbstractConnection],
        scripts: Scripts,
        keys: Keys,
        timeout: float,
        max_connections: int,
    ) -> None:
        self._factory = factory
        self._timeout = timeout
        self._idle: deque[AbstractConnection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        common = _bulk("1") + _bulk(keys.id) + _bulk(keys.base)
        evalsha = _bulk("EVALSHA")
        self._heads = {name: evalsha + _bulk(sha) + common for name, sha in scripts.shas.items()}
        self._bodies = scripts.bodies
        self._closed = False

    async def script(self, name: str, args: Sequence[str]) -> Any:
        """EVALSHA script ``name`` with ``args`` (from its ``ARGV[2]``); its reply.

        Raises:
            BackendError: Redis failed, did not answer in time, or the script raised.
        """
        command = pack(self._heads[name], 5, args)
        try:
            try:
                return await self._call(command)
            except NoScriptError:
                await self._call(pack(b"", 0, ("SCRIPT", "LOAD", self._bodies[name])))
                return await self._call(command)
        except (RedisError, OSError, UnicodeError) as exc:
            raise await self._failure(name, exc) from exc

    async def command(self, *args: str) -> Any:
        """Run one (non-blocking) command; its reply.

        Raises:
            BackendError: Redis failed or did not answer in time.
        """
        try:
            return await self._call(pack(b"", 0, args))
        except (RedisError, OSError, UnicodeError) as exc:
            raise await self._failure(args[0] if args else "command", exc) from exc

    async def _call(self, command: bytes) -> Any:
        """Send ``command`` on an idle connection and read its reply.

        The command goes straight to the connection's stream writer when it has one:
        ``send_packed_command`` would add ``writelines`` and a ``drain`` per call (about
        a third of a short call's client time). Not draining is safe here: a call waits
        for its reply anyway, the transport keeps sending a large command in the
        background meanwhile, and a lost connection fails the read.
        """
        async with asyncio.timeout(self._timeout), self._slots:
            if self._idle:
                conn = self._idle.pop()
            else:
                if self._closed:
                    raise BackendError("the Redis backend is closed")
                conn = self._factory()
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except BaseException:
                    await _discard(conn)
                    raise
            try:
                writer = getattr(conn, "_writer", None)
                if writer is not None:
                    writer.write(command)  # see _call's docstring
                else:
                    await conn.send_packed_command(command, check_health=False)
                reply = await conn.read_response()
            except ResponseError:
                # an error reply (NOSCRIPT, a script error, OOM, ...) was read in full: the
                # connection is in a clean state and stays usable
                if self._closed:
                    await _discard(conn)
                else:
                    self._idle.append(conn)
                raise
            except BaseException:
                await _discard(conn)
                raise
            if self._closed:
                await _discard(conn)
            else:
                self._idle.append(conn)
            return reply

    async def _failure(self, what: str, exc: BaseException) -> BackendError:
        # Refused data (a script error, bad arguments) would fail again: not transient.
        refused = isinstance(exc, ResponseError | DataError | UnicodeError)
        if not refused:
            await self.drop_idle()
        if isinstance(exc, TimeoutError) and not str(exc):
            return BackendError(f"Redis {what} failed: no reply within {self._timeout:g}s")
        return BackendError(f"Redis {what} failed: {exc}", transient=not refused)

    async def drop_idle(self) -> None:
        """Close the idle connections (after a connection failure: they most likely died
        the same way, and each would otherwise fail one more call)."""
        idle, self._idle = self._idle, deque()
        for conn in idle:
            await _discard(conn)

    async def close(self) -> None:
        """Close the idle connections; calls still running close theirs when they end."""
        self._closed = True
        await self.drop_idle()
