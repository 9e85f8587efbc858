"""The worker's side of durable execution for one attempt: the :class:`~conveyor.context.
Durable` a handler's context uses for ``ctx.step``, ``ctx.sleep`` and tokens. Steps are
read lazily (a job that uses none pays nothing) and written fenced by the attempt's lease:
a write refused because the lease was lost stops the attempt silently, as a lost
heartbeat does (the rescued run is the one that stands).

The steps and the job's tokens are read together, in parallel: a job resumed by a
completed token then replays up to its ``wait_for_token`` with that one read, and the
token's outcome comes from it (a completed or expired token never changes again), so
the resume costs one read after the claim instead of three."""

from __future__ import annotations

import asyncio

from conveyor.backends.base import Backend, ClaimedJob, NewToken, StepSave, TokenRecord
from conveyor.context import Control
from conveyor.engine import Engine
from conveyor.models import Token
from conveyor.validation import validate_tags

__all__ = ["JobDurable"]


class JobDurable:
    """Steps and tokens of one claimed job, stored through ``backend``."""

    __slots__ = ("_backend", "_control", "_engine", "_job", "_tokens")

    def __init__(self, engine: Engine, backend: Backend, job: ClaimedJob, control: Control):
        self._engine, self._backend, self._job, self._control = engine, backend, job, control
        self._tokens: dict[str, TokenRecord] = {}  # the job's final tokens, read with its steps

    def now(self) -> float:
        return self._engine.clock.now()

    async def load(self) -> dict[str, str]:
        steps, tokens = await asyncio.gather(
            self._backend.load_steps(self._job.id), self._backend.list_tokens(self._job.id)
        )
        self._tokens = {t.id: t for t in tokens if t.state != "pending"}
        return {s.name: s.result for s in steps}

    async def save(self, name: str, result: str, token: Token | None = None) -> None:
        new_token = None
        if token is not None:
            expires = None if token.expires_at is None else token.expires_at.timestamp()
            new_token = NewToken(token.id, expires, tuple(validate_tags(token.tags)))
        job = self._job
        save = StepSave(job.id, job.token, name, result, self.now(), new_token)
        if not await self._backend.save_step(save):
            # Not running under our lease any more: rescued and run elsewhere, or
            # cancelled. Stop like a lost heartbeat: nothing of this attempt is written.
            self._control.cancel("lost")
            raise asyncio.CancelledError(f"job {job.id} lost its lease; step {name!r} not stored")

    async def token(self, token_id: str) -> Token | None:
        # final when read with the steps; a pending one may have been completed since
        record = self._tokens.get(token_id) or await self._backend.get_token(token_id)
        if record is None or record.job_id != self._job.id:
            return None
        return self._engine.token(record)
