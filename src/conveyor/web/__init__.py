"""The web layer: a tenant-scoped job status API, an admin dashboard and Prometheus metrics.

::

    from conveyor.web import Principal, create_app

    def authenticate(request):
        user = my_session_user(request)          # your own auth
        if user is None:
            return None                          # → 401
        return Principal(tenant=user.org_id, admin=user.is_staff)

    app.mount("/jobs", create_app(queue, authenticate=authenticate))   # FastAPI / Starlette

Needs the ``web`` extra (``pip install conveyor[web]``, Starlette). It uses only the
public :class:`conveyor.Queue` API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.web.principal import Authenticate, Principal

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from conveyor.queue import Queue

__all__ = ["Authenticate", "Principal", "create_app"]


def create_app(
    queue: Queue,
    *,
    authenticate: Authenticate,
    status_path: str = "/api/jobs",
    dashboard_path: str = "/dashboard",
    metrics_path: str = "/metrics",
    metrics_public: bool = False,
) -> Starlette:
    """An ASGI app (Starlette) serving job status, the dashboard and metrics.

    Routes (an empty path mounts nothing for that part):

    - ``GET {status_path}/{id}``: the job's status, for the caller's own tenant's job
      (admins: any job). Another tenant's job and an unknown id are the same plain 404.
    - ``POST {status_path}/{id}/retry`` and ``/cancel``: admin only.
    - ``GET {dashboard_path}``: the dashboard page; its JSON API under
      ``{dashboard_path}/api/`` (``stats``, ``jobs``, ``jobs/{id}``,
      ``jobs/{id}/retry|cancel``): admin only.
    - ``GET {metrics_path}``: Prometheus text; admin only unless ``metrics_public``.

    No or bad credentials give 401, an authenticated non-admin on an admin route 403.
    A state-changing request whose ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``,
    or whose ``Origin`` does not match its ``Host``, gets 403 and changes nothing. Every
    error body is ``{"error": {"code": …, "message": …}}``. On a dormant queue
    (``Queue.from_env()`` without ``CONVEYOR_URL``) no status route is mounted, and the
    dashboard and metrics answer 503.

    Args:
        queue: the queue to serve.
        authenticate: ``authenticate(request)``, sync or async, returning a
            :class:`Principal` or None.
        status_path: prefix of the status API. Defaults to ``/api/jobs``.
        dashboard_path: where the dashboard lives. Defaults to ``/dashboard``.
        metrics_path: where metrics are served. Defaults to ``/metrics``.
        metrics_public: serve metrics without authentication. Defaults to False.

    Returns:
        A Starlette application, mountable in FastAPI or Starlette.

    Raises:
        ImportError: Starlette is not installed (``pip install conveyor[web]``).
        ValidationError: a path does not start with ``/``, or ``authenticate`` is not
            callable.
    """
    try:
        from conveyor.web.app import build_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"conveyor.web needs Starlette: pip install 'conveyor[web]' ({exc})"
        ) from exc
    return build_app(
        queue,
        authenticate=authenticate,
        status_path=status_path,
        dashboard_path=dashboard_path,
        metrics_path=metrics_path,
        metrics_public=metrics_public,
    )
