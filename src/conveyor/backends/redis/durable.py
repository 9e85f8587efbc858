"""Durable execution on Redis: steps, tokens and the resume of waiting jobs.

:class:`DurableVerbs` holds the backend's durable verbs (mixed into
:class:`~conveyor.backends.redis.backend.RedisBackend`); the contract is in
:mod:`conveyor.backends.records`. Storage (see :mod:`~conveyor.backends.redis.keys`):

* ``P steps:<id>`` (HASH) maps a step name to ``"<n> <at> <result>"``: ``n`` numbers the
  steps in storing order (``HSETNX`` semantics: the first result stands), ``at`` is the
  time string the caller gave, ``result`` the JSON text (it may hold spaces; the first two
  never do);
* ``P tok:<token id>`` (HASH) is one token, ``P toks:<id>`` (LIST) the job's token ids,
  oldest first;
* a waiting job sits in ``P wait`` (ZSET by ``run_at``) only, never in a ready set, with
  the token it waits on in its hash's ``wait_token``.

Every transition is one script: ``save_step.lua`` (fenced by the lease token, step and
token together), ``complete_token.lua`` and ``resume_due.lua`` (each resumes a job only
if it is still waiting, so once however many processes race), and the suspend itself, an
:class:`~conveyor.backends.base.Outcome` to ``waiting`` applied by ``complete.lua``,
which checks the token in the same script: a token completed before its job suspends
queues the job at once. Scripts never interleave, so the suspend and ``complete_token``
cannot miss each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from conveyor.backends.base import (
    ResumedJob,
    ResumeParams,
    StepRecord,
    StepSave,
    TokenCompletion,
    TokenCompletionResult,
    TokenRecord,
)
from conveyor.backends.redis import codec
from conveyor.backends.redis.connections import Connections
from conveyor.backends.redis.keys import Keys, order_key

__all__ = ["DurableVerbs"]


class _Host(Protocol):
    """What the verbs use of the backend they are mixed into."""

    _keys: Keys

    def _require(self) -> Connections: ...
    async def _script(self, name: str, *args: str) -> Any: ...
    def wake(self) -> None: ...


class DurableVerbs:
    """The durable-execution verbs of the Redis backend (see the module docstring)."""

    async def save_step(self: _Host, save: StepSave) -> bool:
        """Store a step, and its new token if any, fenced by the lease token (a step of
        that name already stored is kept, and no token is stored with the refused one);
        False when the job does not run under that token."""
        new = save.new_token
        args = [str(save.job_id), save.token, save.name, save.result, codec.ts(save.at)]
        if new is None:
            args += ["", "", "[]"]
        else:
            args += [new.id, codec.opt_ts(new.expires_at), _tags_text(new.tags)]
        return bool(int(await self._script("save_step", *args)))

    async def load_steps(self: _Host, job_id: int) -> list[StepRecord]:
        """The job's stored steps, in the order they were stored."""
        conns = self._require()
        raw = await conns.guard("load_steps", conns.client.hgetall(self._keys.steps(job_id)))
        return steps_from_hash(cast(dict[str, str], raw))

    async def complete_token(self: _Host, completion: TokenCompletion) -> TokenCompletionResult:
        """Complete a pending, unexpired token and resume the job waiting on it, in one
        script (``complete_token.lua``)."""
        now = completion.now
        reply = await self._script(
            "complete_token", completion.id, completion.data, codec.ts(now), order_key(now)
        )
        completed, job_id, resumed, name, tenant, attempts = reply
        if not int(completed):
            return TokenCompletionResult(completed=False)
        if int(resumed) == 1:  # queued (2: handed to an idle worker, nothing to wake)
            self.wake()  # markers wake a worker somewhere; this process's too, at once
        return TokenCompletionResult(
            completed=True,
            job_id=int(job_id),
            resumed=bool(int(resumed)),
            job_name=name,
            tenant=tenant,
            attempt=int(attempts),
        )

    async def get_token(self: _Host, token_id: str) -> TokenRecord | None:
        """The token, or None."""
        conns = self._require()
        raw = await conns.guard("get_token", conns.client.hgetall(self._keys.token(token_id)))
        return token_from_hash(token_id, cast(dict[str, str], raw)) if raw else None

    async def list_tokens(self: _Host, job_id: int) -> list[TokenRecord]:
        """The job's tokens, oldest first (one script call)."""
        rows = await self._script("list_tokens", str(job_id))
        return [token_from_hash(str(tid), codec.flat_to_dict(flat)) for tid, flat in rows]

    async def resume_due(self: _Host, params: ResumeParams) -> list[ResumedJob]:
        """Queue up to ``limit`` waiting jobs whose ``run_at <= now``, found through the
        waiting jobs' own index (``resume_due.lua``)."""
        now = params.now
        if params.limit <= 0:
            return []
        rows = await self._script(
            "resume_due", codec.ts(now), order_key(now), str(int(params.limit))
        )
        if rows:
            self.wake()  # markers wake a worker somewhere; this process's too, at once
        return [
            ResumedJob(int(job_id), str(name), tenant, int(attempts), expired)
            for job_id, name, tenant, attempts, expired in rows
        ]


def _tags_text(tags: Sequence[str]) -> str:
    return json.dumps(list(tags), ensure_ascii=False) if tags else "[]"


def _tags(text: str | None) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(t) for t in value) if isinstance(value, list) else ()


def _time(value: str | None) -> float | None:
    return None if not value else float(value)


def steps_from_hash(raw: Mapping[str, str]) -> list[StepRecord]:
    """A job's ``P steps:<id>`` hash as records, in storing order."""
    numbered = []
    for name, value in raw.items():
        n, at, result = value.split(" ", 2)
        numbered.append((int(n), StepRecord(name, result, float(at))))
    numbered.sort(key=lambda pair: pair[0])
    return [record for _, record in numbered]


def token_from_hash(token_id: str, h: Mapping[str, str]) -> TokenRecord:
    """One ``P tok:<token id>`` hash (see ``save_step.lua``, ``complete_token.lua``)."""
    return TokenRecord(
        id=token_id,
        job_id=int(h["job_id"]),
        state=h["state"],
        data=h.get("data") or None,
        tags=_tags(h.get("tags")),
        expires_at=_time(h.get("expires_at")),
        created_at=float(h["created_at"]),
        completed_at=_time(h.get("completed_at")),
    )
