"""The Lua scripts: read from ``scripts/<verb>.lua``, loaded once, run with EVALSHA.

Each script is sent as ``local P = ARGV[1]`` + the generated key table
(:func:`conveyor.backends.redis.keys.lua_prelude`) + ``scripts/_lib.lua`` + the script
file wrapped in a function, followed by the flush of the writes the library deferred
(see ``_lib.lua``). Nothing in a script body comes from user input. After a ``SCRIPT FLUSH`` or a
server restart, EVALSHA answers NOSCRIPT; :meth:`Scripts.run` then loads the script
again and retries once (NOSCRIPT means the script did not run, so this is safe).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from conveyor.backends.redis.keys import lua_prelude

__all__ = ["SCRIPT_NAMES", "Scripts"]

SCRIPT_NAMES: tuple[str, ...] = (
    "append_logs",
    "cancel",
    "cancel_jobs",
    "cancel_requests",
    "channel_stats",
    "claim",
    "complete",
    "cron_delete",
    "cron_fire",
    "cron_list",
    "cron_pause",
    "cron_upsert",
    "enqueue",
    "expired_leases",
    "heartbeat",
    "list_jobs",
    "lock_acquire",
    "lock_release",
    "promote_due",
    "prune",
    "retry",
    "set_paused",
    "set_progress",
)


def _read(name: str) -> str:
    return (
        resources.files("conveyor.backends.redis")
        .joinpath("scripts", f"{name}.lua")
        .read_text("utf-8")
    )


class Scripts:
    """The compiled script bodies and their SHA1 digests."""

    def __init__(self) -> None:
        head = "local P = ARGV[1]\n" + lua_prelude() + _read("_lib") + "\n"
        self.bodies: dict[str, str] = {
            name: f"{head}local function main()\n{_read(name)}\nend\n"
            "local result = main()\nflush_later()\nreturn result\n"
            for name in SCRIPT_NAMES
        }
        self.shas: dict[str, str] = {
            name: hashlib.sha1(body.encode("utf-8")).hexdigest()
            for name, body in self.bodies.items()
        }

    async def load_all(self, client: Redis) -> None:
        """SCRIPT LOAD every script (one pipelined round trip)."""
        async with client.pipeline(transaction=False) as pipe:
            for body in self.bodies.values():
                pipe.script_load(body)
            await pipe.execute()

    async def run(self, client: Redis, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA the script; on NOSCRIPT load it and run it once more."""
        sha = self.shas[name]
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.bodies[name])
            return await client.evalsha(sha, len(keys), *keys, *args)
