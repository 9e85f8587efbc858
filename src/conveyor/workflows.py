"""The workflow half of the public :class:`conveyor.Queue`: batches with a completion
callback (DESIGN.md "Workflows: dependencies and batches"). Dependencies and uniqueness
windows are enqueue options (``depends_on``, ``unique_for``, …) of every enqueue call. A
mixin, so ``queue.py`` stays a short façade."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conveyor.clock import from_ts
from conveyor.engine import Engine
from conveyor.errors import ValidationError
from conveyor.models import Batch, JobSpec

__all__ = ["WorkflowMethods"]


class WorkflowMethods:
    """Each method is part of :class:`conveyor.Queue`."""

    engine: Engine

    async def enqueue_batch(
        self,
        specs: Iterable[JobSpec],
        *,
        on_complete: JobSpec | None = None,
        connection: Any = None,
    ) -> Batch:
        """Enqueue ``specs`` as one batch, all or nothing. ``on_complete`` is enqueued
        exactly once, when every member has finished (completed, failed or cancelled,
        after its retries settled), and its handler sees the counts in ``ctx.batch``
        (``{"id", "total", "completed", "failed", "cancelled"}``). A spec may depend on
        an earlier spec of the batch (``depends_on=[spec]``)."""
        batch_id, ids = await self.engine.enqueue_batch(specs, on_complete, connection)
        batch = await self.get_batch(batch_id)
        assert batch is not None
        return Batch(**{**_fields(batch), "job_ids": tuple(ids)})

    async def get_batch(self, batch_id: str) -> Batch | None:
        """The batch's counters and state (``running``, then ``done``), or None."""
        if not isinstance(batch_id, str) or not batch_id:
            raise ValidationError(f"a batch id is a non-empty str, got {batch_id!r}")
        record = await (await self.engine.ready()).get_batch(batch_id)
        if record is None:
            return None
        return Batch(
            id=record.id, total=record.total, completed=record.completed,
            failed=record.failed, cancelled=record.cancelled, state=record.state,
            created_at=from_ts(record.created_at),  # type: ignore[arg-type]
            callback_job_id=record.callback_job_id,
        )  # fmt: skip


def _fields(batch: Batch) -> dict[str, Any]:
    return {name: getattr(batch, name) for name in Batch.__dataclass_fields__}
