"""Connections of the Redis backend: the redis-py pool, the lane, error translation.

Three kinds of connection serve one backend:

* the :class:`~conveyor.backends.redis.lane.Lane`'s own lean connections run every script
  call (the hot path);
* dedicated connections, made by :meth:`Connections.new_connection`, run the blocking
  reads (the wake-up's ``BZPOPMIN``, the event stream's ``XREAD BLOCK``);
* a redis-py client and its pool run the remaining commands (reads, pipelines).

Every driver failure becomes :class:`~conveyor.errors.BackendError`; after a connection
failure the idle connections are dropped too (they most likely died the same way).

Every one of them speaks RESP2 (:data:`PROTOCOL`), whatever redis-py's default (redis-py
8 asks for RESP3) or a ``?protocol=`` in the URL says: conveyor reads several replies
itself (packed commands, blocking reads), and a reply's shape must not depend on the
installed driver. RESP2 also spares each new connection its ``HELLO`` round trip. Code
that decodes a reply still accepts both shapes (see :mod:`~conveyor.backends.redis.codec`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.lane import Lane
from conveyor.backends.redis.scripts import Scripts
from conveyor.errors import BackendError

__all__ = ["CONNECT_TIMEOUT", "MAX_CONNECTIONS", "PROTOCOL", "SOCKET_TIMEOUT", "Connections"]

log = logging.getLogger("conveyor")

T = TypeVar("T")

SOCKET_TIMEOUT = 10.0
"""Seconds a command may take before the call fails with BackendError."""
CONNECT_TIMEOUT = 5.0
"""Seconds to establish a connection."""
MAX_CONNECTIONS = 64
"""Connections open at once for script calls, and again in the redis-py pool for the
other commands (blocking reads use their own)."""
PROTOCOL = 2
"""The RESP version of every connection conveyor makes."""


def _pinned(url: str) -> str:
    """``url`` without a ``protocol`` query option (conveyor sets :data:`PROTOCOL`
    itself, and redis-py lets an option in the URL override its keyword arguments)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k.lower() != "protocol"]
    if len(kept) == len(query):
        return url
    log.debug("conveyor: Redis connections speak RESP%d; ignoring the URL's protocol", PROTOCOL)
    return urlunsplit(parts._replace(query=urlencode(kept)))


class Connections:
    """The connections of one connected backend (nothing connects before first use).

    Args:
        url: ``redis://`` or ``rediss://`` URL (db from the path).
        scripts: the script bodies and digests.
        keys: the queue's keys.
    """

    def __init__(self, url: str, scripts: Scripts, keys: Keys) -> None:
        pool = BlockingConnectionPool.from_url(
            _pinned(url),
            protocol=PROTOCOL,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS,
            timeout=CONNECT_TIMEOUT,
        )
        self._pool = pool
        self._scripts = scripts
        self.client = Redis(connection_pool=pool)
        # our own connections have no socket timeout: each call bounds itself as a whole
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None, "protocol": PROTOCOL}
        self._connection_class = pool.connection_class
        self.lane = Lane(self.new_connection, scripts, keys, SOCKET_TIMEOUT, MAX_CONNECTIONS)

    def new_connection(self) -> AbstractConnection:
        """A new, unconnected connection without a socket timeout (for the lane and the
        blocking reads, which bound each call as a whole)."""
        conn: AbstractConnection = self._connection_class(**self._kwargs)
        return conn

    async def check(self) -> None:
        """Check ``maxmemory-policy`` (a loud warning unless it is ``noeviction``) and
        load the scripts. Raises BackendError when Redis does not answer."""
        await self.guard("connect", self._check_memory_policy())
        await self.load_scripts("connect")

    async def load_scripts(self, what: str) -> None:
        """SCRIPT LOAD every script (one round trip)."""
        await self.guard(what, self._scripts.load_all(self.client))

    async def _check_memory_policy(self) -> None:
        try:
            config = await self.client.config_get("maxmemory-policy")
        except ResponseError as exc:  # CONFIG renamed or disabled (managed Redis)
            log.info("conveyor: could not read Redis maxmemory-policy (%s)", exc)
            return
        policy = config.get("maxmemory-policy")
        if policy is not None and policy != "noeviction":
            log.warning(
                "conveyor: Redis maxmemory-policy is %r, not 'noeviction': under memory "
                "pressure Redis may evict job data and jobs will be lost. Set "
                "'maxmemory-policy noeviction' on this server.",
                policy,
            )

    async def guard(self, what: str, aw: Awaitable[T]) -> T:
        """Await a driver call, turning every driver failure into BackendError."""
        try:
            return await aw
        except (RedisError, OSError, UnicodeError) as exc:
            lost = isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)
            if lost:
                await self._drop_idle()
            # Anything but a lost or slow connection would fail again: not transient.
            raise BackendError(f"Redis {what} failed: {exc}", transient=lost) from exc

    async def _drop_idle(self) -> None:
        """After a connection failure, drop idle connections too: they most likely died
        the same way, and each would otherwise fail one more call."""
        await self.lane.drop_idle()
        try:
            await self._pool.disconnect(inuse_connections=False)
        except (RedisError, OSError):
            pass

    async def pipeline(self, what: str, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run read commands in one transactional pipeline (one consistent snapshot)."""

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                build(pipe)
                return list(await pipe.execute())

        return await self.guard(what, run())

    async def unblock(self, client_id: int) -> Any:
        """``CLIENT UNBLOCK <client_id>`` (ends another connection's blocking command)."""
        return await self.lane.command("CLIENT", "UNBLOCK", str(client_id))

    async def close(self) -> None:
        """Close every connection (calls still running on the lane close theirs when
        they end)."""
        await self.lane.close()
        try:
            await self.client.aclose()
        except (RedisError, OSError):
            pass
        try:
            await self._pool.aclose()
        except (RedisError, OSError):
            pass
