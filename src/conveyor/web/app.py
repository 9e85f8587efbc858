"""The Starlette application behind :func:`conveyor.web.create_app`.

Every request first meets :class:`_Guard` (the ``Host`` check, when the app has
``allowed_hosts``: 400), then every route the same guards, in this order: the cross-site
check (for state-changing requests), authentication (401), the admin check (403), the
dormant check (503), then the job lookup (404). Only the public :class:`conveyor.Queue`
API is used, never a backend (but for the per-channel metrics, see
:func:`conveyor.web.metrics.read_store`). Every response says
``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor.errors import (
    BackendError,
    ConveyorError,
    InvalidStateError,
    QueueDormant,
    ValidationError,
)
from conveyor.models import Job
from conveyor.web import stream
from conveyor.web.guards import ApiError, check_same_origin, json_response
from conveyor.web.hosts import AllowedHosts
from conveyor.web.metrics import AppMetrics
from conveyor.web.principal import Authenticate, Principal
from conveyor.web.serialize import job_status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from conveyor.queue import Queue

__all__ = ["ApiError", "build_app", "check_same_origin", "error_response"]

log = logging.getLogger("conveyor")

_JOB_ID = re.compile(r"[0-9]{1,18}")  # fits a signed 64-bit id on every backend
_JS = "text/javascript; charset=utf-8"
_ACTIONS = ("retry", "cancel")
_CONVEYOR_ERRORS: tuple[tuple[type[ConveyorError], int, str], ...] = (
    (ValidationError, 400, "invalid"),
    (InvalidStateError, 409, "conflict"),
    (QueueDormant, 503, "dormant"),
)


_NOSNIFF = ("X-Content-Type-Options", "nosniff")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    # nosniff here too: a 500 is answered outside _Guard (by Starlette's error middleware).
    return json_response(data, status, headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error body: ``{"error": {"code": …, "message": …}}``."""
    return _json({"error": {"code": code, "message": message}}, status, headers)


def _not_found() -> ApiError:
    # One message for an unknown id, a malformed id and another tenant's job.
    return ApiError(404, "not_found", "job not found")


class _Web:
    """The route handlers, sharing the queue, the authenticator and the guards."""

    def __init__(
        self,
        queue: Queue,
        authenticate: Authenticate,
        dashboard_prefix: str | None,
        metrics: AppMetrics | None,
        metrics_public: bool,
        stream_interval: float,
    ) -> None:
        self.queue = queue
        self.authenticate = authenticate
        self.dashboard_prefix = dashboard_prefix
        self.app_metrics = metrics
        self.metrics_public = metrics_public
        self.stream_interval = stream_interval

    # -- guards --------------------------------------------------------------------------
    async def principal(self, request: Request, *, admin: bool) -> Principal:
        """The caller, who must be authenticated (401) and, with ``admin``, an admin (403)."""
        result = self.authenticate(request)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise ApiError(401, "unauthorized", "authentication required")
        if not isinstance(result, Principal):
            raise TypeError(
                f"authenticate() must return conveyor.web.Principal or None, "
                f"not {type(result).__name__}"
            )
        if admin and not result.admin:
            raise ApiError(403, "forbidden", "this needs an admin")
        return result

    def available(self) -> None:
        """Refuse with 503 when the queue is dormant (no ``CONVEYOR_URL``)."""
        if self.queue.dormant:
            raise ApiError(503, "dormant", "the job queue is dormant (CONVEYOR_URL is not set)")

    async def job(self, request: Request, tenant: str | None = None) -> Job:
        """The job named by the ``job_id`` path parameter, or a 404 (also for another
        tenant's job when ``tenant`` is given: the store filters, no payload is loaded)."""
        raw = request.path_params["job_id"]
        if not _JOB_ID.fullmatch(raw):
            raise _not_found()
        job = await self.queue.get_job(int(raw), tenant=tenant)
        if job is None:
            raise _not_found()
        return job

    async def act(self, request: Request) -> Job:
        """Retry or cancel the job of a POST (cross-site check and admin already done)."""
        action = request.path_params["action"]
        if action not in _ACTIONS:
            raise ApiError(404, "not_found", "no such route")
        job = await self.job(request)
        if action == "retry":
            try:
                await self.queue.retry(job.id)
            except InvalidStateError:
                raise ApiError(
                    409,
                    "conflict",
                    f"job {job.id} is {job.state.value}; only failed or cancelled jobs "
                    f"can be retried",
                ) from None
        elif not await self.queue.cancel(job.id):
            raise ApiError(
                409, "conflict", f"job {job.id} has already finished ({job.state.value})"
            )
        return await self.queue.get_job(job.id) or job

    # -- status API ----------------------------------------------------------------------
    async def readable(self, request: Request) -> tuple[Job, str | None]:
        """The caller's job (401, or the one 404) and the tenant its reads are scoped to
        (None for an admin)."""
        principal = await self.principal(request, admin=False)
        if not principal.admin and principal.tenant is None:
            raise _not_found()  # it can read no job: nothing to load to find that out
        tenant = None if principal.admin else principal.tenant
        job = await self.job(request, tenant)
        if not principal.can_read(job.tenant):
            raise _not_found()
        return job, tenant

    async def status(self, request: Request) -> Response:
        job, _ = await self.readable(request)
        return _json(job_status(job))

    async def status_stream(self, request: Request) -> Response:
        job, tenant = await self.readable(request)
        return stream.EventStream(stream.watch(self.queue, job, tenant, self.stream_interval))

    async def script(self, request: Request) -> Response:
        """``conveyor.js``: public (it holds no data), revalidated by ETag."""
        etag = stream.script_etag()
        headers = {
            "Cache-Control": "no-cache",
            "ETag": etag,
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(stream.script(), media_type=_JS, headers=headers)

    async def status_action(self, request: Request) -> Response:
        check_same_origin(request)
        await self.principal(request, admin=True)
        return _json(job_status(await self.act(request)))

    # -- metrics -------------------------------------------------------------------------
    async def metrics(self, request: Request) -> Response:
        if not self.metrics_public:
            await self.principal(request, admin=True)
        self.available()
        assert self.app_metrics is not None
        # A store that does not answer is conveyor_up 0: the scrape itself still succeeds.
        body, content_type = await self.app_metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def _prefix(path: str, what: str) -> str | None:
    """None for an empty path (not mounted), else the path without a trailing slash."""
    if not isinstance(path, str):
        raise ValidationError(f"{what} must be a string, got {type(path).__name__}")
    if path == "":
        return None
    if not path.startswith("/"):
        raise ValidationError(f"{what} must start with '/' (or be empty), got {path!r}")
    return path.rstrip("/")


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _on_conveyor_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BackendError):
        # The driver's message may name hosts or credentials: log it, answer generically.
        log.warning(
            "web: the job store failed for %s %s: %s", request.method, request.url.path, exc
        )
        return error_response(503, "unavailable", "the job store is unavailable; try again")
    for kind, status, code in _CONVEYOR_ERRORS:
        if isinstance(exc, kind):
            return error_response(status, code, str(exc))
    log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


async def _on_crash(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal", "internal server error")


class _Guard:
    """ASGI middleware in front of every route: answers 400 ``invalid_host`` to a request
    whose ``Host`` header is not allowed (DNS rebinding), and adds
    ``X-Content-Type-Options: nosniff`` to every response (Starlette's redirects too).

    Args:
        app: the application behind it.
        allowed: the allowed hosts, or None for any host.
    """

    def __init__(self, app: ASGIApp, allowed: AllowedHosts | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed is not None and not self.allowed.permits(Headers(scope=scope).get("host")):
            refusal = error_response(400, "invalid_host", "this Host header is not allowed")
            await refusal(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", []))
                MutableHeaders(scope=message).setdefault(*_NOSNIFF)
            await send(message)

        await self.app(scope, receive, send_nosniff)


def build_app(
    queue: Queue,
    *,
    authenticate: Authenticate,
    status_path: str,
    dashboard_path: str,
    metrics_path: str,
    metrics_public: bool,
    allowed_hosts: Iterable[str] | None,
    stream_interval: float,
) -> Starlette:
    """Build the application; see :func:`conveyor.web.create_app`."""
    if not callable(authenticate):
        raise ValidationError("authenticate must be a callable taking the request")
    if (
        isinstance(stream_interval, bool)
        or not isinstance(stream_interval, int | float)
        or not 0 < stream_interval <= 60
    ):
        raise ValidationError(
            f"stream_interval must be seconds, more than 0 and at most 60, got {stream_interval!r}"
        )
    allowed = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
    status = _prefix(status_path, "status_path")
    dash = _prefix(dashboard_path, "dashboard_path")
    metrics_at = _prefix(metrics_path, "metrics_path")
    app_metrics = AppMetrics(queue) if metrics_at is not None else None
    web = _Web(queue, authenticate, dash, app_metrics, bool(metrics_public), float(stream_interval))

    routes: list[BaseRoute] = []
    if dash is not None:
        # Imported here: the dashboard's handlers use this module's guards and errors.
        from conveyor.web.dashboard_api import DashboardApi

        routes += DashboardApi(web, dash, float(stream_interval)).routes()
    if metrics_at is not None:
        routes.append(Route(metrics_at or "/", web.metrics, methods=["GET"]))
    # Status last: with status_path="/" its "/{job_id}" must not shadow the routes above.
    if status is not None and not queue.dormant:  # a dormant queue serves no status
        routes += [
            Route(f"{status}/conveyor.js", web.script, methods=["GET"]),
            Route(f"{status}/{{job_id}}", web.status, methods=["GET"]),
            Route(f"{status}/{{job_id}}/stream", web.status_stream, methods=["GET"]),
            Route(f"{status}/{{job_id}}/{{action}}", web.status_action, methods=["POST"]),
        ]

    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, allowed=allowed)],
        exception_handlers={
            ApiError: _on_api_error,
            HTTPException: _on_http_error,
            ConveyorError: _on_conveyor_error,
            Exception: _on_crash,
        },
    )
