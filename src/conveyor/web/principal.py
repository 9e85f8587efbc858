"""Who is calling: what ``authenticate(request)`` returns to :func:`conveyor.web.create_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["Authenticate", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Args:
        tenant: the caller's tenant; a non-admin reads only jobs enqueued with this exact
            ``tenant=``. A non-admin without a tenant reads no job at all (untenanted jobs
            are nobody's to see but an admin's). Defaults to None.
        admin: may read every tenant's jobs, retry and cancel them, and use the dashboard
            and metrics. Defaults to False.
    """

    tenant: str | None = None
    admin: bool = False

    def can_read(self, job_tenant: str | None) -> bool:
        """Whether this caller may see a job of ``job_tenant``."""
        return self.admin or (self.tenant is not None and self.tenant == job_tenant)


Authenticate: TypeAlias = Callable[["Request"], "Principal | Awaitable[Principal | None] | None"]
"""``authenticate(request)``, sync or async: a :class:`Principal`, or None for no or bad
credentials (the request then gets 401)."""
