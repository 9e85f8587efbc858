"""The web layer: a tenant-scoped job status API (and its live stream for browsers), an
admin dashboard and Prometheus metrics.

::

    from conveyor.web import Principal, create_app

    def authenticate(request):
        user = my_session_user(request)          # your own auth
        if user is None:
            return None                          # → 401
        return Principal(tenant=user.org_id, admin=user.is_staff)

    app.mount("/jobs", create_app(queue, authenticate=authenticate))   # FastAPI / Starlette

Needs the ``web`` extra (``pip install conveyor[web]``: Starlette, prometheus-client). It
uses the public :class:`conveyor.Queue` API.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from conveyor.web.principal import Authenticate, Principal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.applications import Starlette

    from conveyor.queue import Queue

__all__ = ["Authenticate", "Principal", "create_app"]


def create_app(
    queue: Queue,
    *,
    authenticate: Authenticate,
    status_path: str | None = None,
    dashboard_path: str = "/dashboard",
    metrics_path: str = "/metrics",
    metrics_public: bool = False,
    allowed_hosts: Iterable[str] | None = None,
    stream_interval: float = 0.5,
) -> Starlette:
    """An ASGI app (Starlette) serving job status, the dashboard and metrics.

    Routes (an empty path mounts nothing for that part):

    - ``GET {status_path}/{id}``: the job's status, for the caller's own tenant's job
      (admins: any job). Another tenant's job and an unknown id are the same plain 404.
    - ``GET {status_path}/{id}/stream``: the same job's status as Server-Sent Events
      (``update`` at once and on every change, ``done`` when it is completed, failed or
      cancelled), with the same rules. ``GET {status_path}/conveyor.js``: an ES module,
      ``watchJob(id, {onUpdate, onDone, onError})``, that reads it (no credentials
      needed: it holds no data).
    - ``POST {status_path}/{id}/retry`` and ``/cancel``: admin only.
    - ``GET {dashboard_path}``: the dashboard page; its JSON API under
      ``{dashboard_path}/api/`` (``stats``, ``jobs``, ``jobs/{id}``,
      ``jobs/{id}/retry|cancel``): admin only.
    - ``GET {metrics_path}``: Prometheus text (OpenMetrics when asked): the store's
      gauges and this process's job counters and histograms; admin only unless
      ``metrics_public``.

    With ``allowed_hosts``, a request whose ``Host`` header names another host gets 400
    before anything else (DNS rebinding). No or bad credentials give 401, an
    authenticated non-admin on an admin route 403. A state-changing request whose
    ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``, or whose ``Origin`` is not the
    request's own (scheme, ``Host`` and port), gets 403 and changes nothing. Every error
    body is ``{"error": {"code": …, "message": …}}``, and every response carries
    ``X-Content-Type-Options: nosniff``. A stored value nested too deeply for the JSON
    encoder is answered as a placeholder string rather than failing the response. On a dormant queue
    (``Queue.from_env()`` without ``CONVEYOR_URL``) no status route is mounted, and the
    dashboard and metrics answer 503.

    Args:
        queue: the queue to serve.
        authenticate: ``authenticate(request)``, sync or async, returning a
            :class:`Principal` or None.
        status_path: prefix of the status API. Defaults to ``CONVEYOR_STATUS_PATH``, else
            ``/api/jobs``.
        dashboard_path: where the dashboard lives. Defaults to ``/dashboard``.
        metrics_path: where metrics are served. Defaults to ``/metrics``.
        metrics_public: serve metrics without authentication. Defaults to False.
        allowed_hosts: the host names the app answers to (any port): names, IP
            addresses (``[::1]``), ``*.example.com`` for subdomains, ``*`` for any. None
            answers any ``Host``, for an app behind your own proxy or host check.
            Defaults to None.
        stream_interval: seconds between two reads of the job by an open status stream
            (more than 0, at most 60). Defaults to 0.5.

    Returns:
        A Starlette application, mountable in FastAPI or Starlette.

    Raises:
        ImportError: Starlette or prometheus-client is not installed (``pip install
            conveyor[web]``).
        ValidationError: a path does not start with ``/``, ``authenticate`` is not
            callable, ``allowed_hosts`` is not a list of host names, or
            ``stream_interval`` is out of range.
    """
    try:
        from conveyor.web.app import build_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"conveyor.web needs Starlette and prometheus-client: pip install 'conveyor[web]' "
            f"({exc})"
        ) from exc
    if status_path is None:
        status_path = os.environ.get("CONVEYOR_STATUS_PATH", "/api/jobs")
    return build_app(
        queue,
        authenticate=authenticate,
        status_path=status_path,
        dashboard_path=dashboard_path,
        metrics_path=metrics_path,
        metrics_public=metrics_public,
        allowed_hosts=allowed_hosts,
        stream_interval=stream_interval,
    )
