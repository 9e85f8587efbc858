"""The Lua scripts: read from ``scripts/<verb>.lua``, loaded once, run with EVALSHA.

Each script is sent as ``local P = ARGV[1]`` + the generated key table
(:func:`conveyor.backends.redis.keys.lua_prelude`) + the library + the script file
wrapped in a function, followed by the flush of the writes the library deferred (see
``_lib.lua``). The library is the files of :data:`LIBRARY` (``scripts/_lib*.lua``) read
in that order, as if they were one file. Nothing in a script body comes from user input.

Redis runs the whole text on every call, so each script gets only the part of the
library it uses: the top-level definitions of the library (each ``local`` statement at
the start of a line, with the comment lines above it) that its code names, directly or
through other definitions, in their original order, and only the key-table entries that
code names. Names are matched as words, so a mention too many only costs a definition
kept, never one missing. Scripts run through
:class:`~conveyor.backends.redis.lane.Lane`; after a ``SCRIPT FLUSH`` or a server restart,
EVALSHA answers NOSCRIPT and the lane loads the script again and retries once (NOSCRIPT
means the script did not run, so this is safe).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from redis.asyncio import Redis

from conveyor.backends.redis.keys import lua_prelude

__all__ = ["LIBRARY", "SCRIPT_NAMES", "Scripts"]

LIBRARY: tuple[str, ...] = ("_lib", "_lib_jobs", "_lib_limits", "_lib_workflow", "_lib_worker")
"""The library's files (``scripts/<name>.lua``), in order: a definition may use only
those before it."""

SCRIPT_NAMES: tuple[str, ...] = (
    "append_logs",
    "cancel",
    "cancel_jobs",
    "cancel_requests",
    "channel_stats",
    "claim",
    "claim_limited",
    "complete",
    "complete_claim",
    "complete_claim_limited",
    "complete_token",
    "cron_delete",
    "cron_fire",
    "cron_list",
    "cron_pause",
    "cron_upsert",
    "delete_jobs",
    "dependency_results",
    "enqueue",
    "enqueue_workflow",
    "expired_leases",
    "heartbeat",
    "list_jobs",
    "list_tokens",
    "lock_acquire",
    "promote_due",
    "prune",
    "resume_due",
    "retry",
    "save_step",
    "set_paused",
    "set_progress",
    "throughput",
    "wait_release",
    "worker_list",
    "worker_register",
    "worker_remove",
)


_DEFINITION = re.compile(r"local\s+(?:function\s+([A-Za-z_]\w*)|([A-Za-z_][\w\s,]*?)\s*=)")
_WORD = re.compile(r"[A-Za-z_]\w*")
_KEY = re.compile(r"\bK\.([A-Za-z_]\w*)")
_COMMENT_LINE = re.compile(r"^[ \t]*--.*$", re.MULTILINE)


class _Definition:
    __slots__ = ("names", "text")

    def __init__(self, names: tuple[str, ...], text: str) -> None:
        self.names = names
        self.text = text

    def words(self) -> set[str]:
        return _words(self.text)


def _words(code: str) -> set[str]:
    """Every word of ``code`` outside whole-line comments."""
    return set(_WORD.findall(_COMMENT_LINE.sub("", code)))


def _definitions(lib: str, file: str = "_lib.lua") -> list[_Definition]:
    """The top-level definitions of one library file (named ``file`` in errors): a line
    starting with ``local`` begins one, indented lines and ``end`` continue it, comment
    and blank lines go with what follows them."""
    out: list[_Definition] = []
    pending = ""
    for n, line in enumerate(lib.splitlines(keepends=True), 1):
        if line.startswith("local"):
            match = _DEFINITION.match(line)
            if match is None:
                raise ValueError(f"{file}:{n}: not a local definition: {line!r}")
            function, variables = match.groups()
            names = (function,) if function else tuple(v.strip() for v in variables.split(","))
            out.append(_Definition(names, pending + line))
            pending = ""
        elif not line.strip() or line.startswith("--"):
            pending += line
        elif line[0] in " \t" or line.startswith("end"):
            if not out:
                raise ValueError(f"{file}:{n}: code before the first definition")
            out[-1].text += pending + line
            pending = ""
        else:
            raise ValueError(f"{file}:{n}: top-level code that is not a definition: {line!r}")
    return out


def _library_for(definitions: list[_Definition], code: str) -> str:
    """The definitions ``code`` uses, directly or through others, in their order."""
    by_name = {name: i for i, d in enumerate(definitions) for name in d.names}
    used: set[int] = set()
    todo = [_words(code)]
    while todo:
        for word in todo.pop():
            i = by_name.get(word)
            if i is not None and i not in used:
                used.add(i)
                todo.append(definitions[i].words())
    return "".join(definitions[i].text for i in sorted(used))


def _read(name: str) -> str:
    return (
        resources.files("conveyor.backends.redis")
        .joinpath("scripts", f"{name}.lua")
        .read_text("utf-8")
    )


@functools.cache
def _bodies() -> Mapping[str, str]:
    definitions = [d for part in LIBRARY for d in _definitions(_read(part), f"{part}.lua")]
    bodies: dict[str, str] = {}
    for name in SCRIPT_NAMES:
        main = (
            f"local function main()\n{_read(name)}\nend\n"
            "local result = main()\nflush_later()\nreturn result\n"
        )
        library = _library_for(definitions, main)
        keys = set(_KEY.findall(library + main))
        bodies[name] = f"local P = ARGV[1]\n{lua_prelude(keys)}{library}\n-- {name}.lua\n{main}"
    return MappingProxyType(bodies)


class Scripts:
    """The compiled script bodies and their SHA1 digests (built once per process)."""

    def __init__(self) -> None:
        self.bodies: Mapping[str, str] = _bodies()
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
