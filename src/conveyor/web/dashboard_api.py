"""The dashboard's routes: its page, its two static files, and its JSON API under
``{dashboard_path}/api/``, two Server-Sent Event streams included.

Everything but the static files (code, no data) needs an admin, with the app's guards in
the app's order: the cross-site check (state-changing requests), authentication (401),
admin (403), the dormant queue (503), then the lookup (404). Only the public
:class:`conveyor.Queue` API is used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor.clock import from_ts
from conveyor.durations import parse_duration
from conveyor.errors import BackendError, InvalidStateError, ValidationError
from conveyor.models import JobState
from conveyor.serialize import iso, job_detail, schedule_dict
from conveyor.web import dashboard
from conveyor.web.dashboard_query import (
    UNFINISHED,
    JobQuery,
    channel_dict,
    int_param,
    invalid,
    tally,
    without,
    worker_dict,
)
from conveyor.web.guards import ApiError, check_same_origin, json_response
from conveyor.web.serialize import job_summary
from conveyor.web.stream import KEEPALIVE, RECONNECT_MS, EventStream, sse

if TYPE_CHECKING:
    from conveyor.models import Job
    from conveyor.queue import Queue
    from conveyor.web.principal import Principal


class Guards(Protocol):
    """What the dashboard takes from the app's route handlers (``app._Web``): the queue
    and the guards every route applies in the same order."""

    queue: Queue

    async def principal(self, request: Request, *, admin: bool) -> Principal: ...
    def available(self) -> None: ...
    async def act(self, request: Request) -> Job: ...


__all__ = ["BULK_PREVIEW_MAX", "DashboardApi", "JobQuery"]

log = logging.getLogger("conveyor")

#: Jobs a bulk preview reads at most to count what a bulk action would change; past it
#: the counts are lower bounds (``"capped": true``).
BULK_PREVIEW_MAX = 10_000
#: Seconds a dashboard stream stays open; the browser then reconnects on its own, so no
#: stream (or what it holds) lives on forever.
STREAM_LIFETIME = 300.0
#: The most buckets a throughput chart asks for.
MAX_BUCKETS = 1_000
_PAGE = 500
_JOB_ID = re.compile(r"[0-9]{1,18}")
_INT = re.compile(r"[0-9]{1,19}")
_BULK = ("retry", "cancel", "delete")
_JOB_ACTIONS = ("retry", "cancel", "delete")
_CRON_ACTIONS = ("pause", "resume", "run")
_PAUSE_ACTIONS = ("pause", "resume")


def _job_not_found() -> ApiError:
    return ApiError(404, "not_found", "job not found")


class DashboardApi:
    """The dashboard's route handlers.

    Args:
        web: the app's handlers, whose guards (``principal``, ``available``, ``job``,
            ``act``) these use.
        prefix: the dashboard's path (``""`` at the root).
        interval: seconds between two reads of a stream.
    """

    def __init__(self, web: Guards, prefix: str, interval: float) -> None:
        self.web = web
        self.prefix = prefix
        self.interval = interval

    @property
    def queue(self) -> Queue:
        return self.web.queue

    def routes(self) -> list[BaseRoute]:
        d, api = self.prefix, f"{self.prefix}/api"
        get, post = ["GET"], ["POST"]
        return [
            Route(d or "/", self.page, methods=get),
            Route(f"{d}/jobs", self.page, methods=get),
            Route(f"{d}/jobs/{{job_id}}", self.job_page, methods=get),
            Route(f"{d}/cron", self.page, methods=get),
            Route(f"{d}/workers", self.page, methods=get),
            Route(f"{d}/assets/{{name}}", self.asset, methods=get),
            Route(f"{api}/stats", self.stats, methods=get),
            Route(f"{api}/overview", self.overview, methods=get),
            Route(f"{api}/stream", self.overview_stream, methods=get),
            Route(f"{api}/throughput", self.throughput, methods=get),
            Route(f"{api}/pause", self.pause_all, methods=post),
            Route(f"{api}/resume", self.resume_all, methods=post),
            Route(f"{api}/channels/{{channel:path}}/{{action}}", self.pause_channel, methods=post),
            Route(f"{api}/jobs", self.jobs, methods=get),
            Route(f"{api}/jobs/{{job_id}}", self.detail, methods=get),
            Route(f"{api}/jobs/{{job_id}}/stream", self.job_stream, methods=get),
            Route(f"{api}/jobs/{{job_id}}/{{action}}", self.job_action, methods=post),
            Route(f"{api}/bulk", self.bulk_preview, methods=get),
            Route(f"{api}/bulk/{{action}}", self.bulk, methods=post),
            Route(f"{api}/cron", self.cron, methods=get),
            Route(f"{api}/cron/{{name:path}}/{{action}}", self.cron_action, methods=post),
            Route(f"{api}/workers", self.workers, methods=get),
        ]

    # -- guards --------------------------------------------------------------------------
    async def admin(self, request: Request, *, changes: bool = False) -> None:
        """The app's guards, in its order: cross-site (``changes``), 401, 403, 503."""
        if changes:
            check_same_origin(request)
        await self.web.principal(request, admin=True)
        self.web.available()

    @staticmethod
    def job_id(request: Request) -> int:
        """The path's job id (a malformed one is the same 404 as an unknown one)."""
        raw = request.path_params["job_id"]
        if not _JOB_ID.fullmatch(raw):
            raise _job_not_found()
        return int(raw)

    # -- page and assets -----------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        await self.admin(request)
        base = f"{request.scope.get('root_path', '')}{self.prefix}"
        headers = dashboard.headers(
            f"{base}/assets", request.url.scheme, request.headers.get("host")
        )
        return HTMLResponse(dashboard.render(base), headers=headers)

    async def job_page(self, request: Request) -> Response:
        if not _JOB_ID.fullmatch(request.path_params["job_id"]):
            raise ApiError(404, "not_found", "no such route")
        return await self.page(request)

    async def asset(self, request: Request) -> Response:
        """``dashboard.js`` and ``dashboard.css``: public (code, no data), revalidated by
        ETag."""
        found = dashboard.asset(request.path_params["name"])
        if found is None:
            raise ApiError(404, "not_found", "no such route")
        headers = {
            "Cache-Control": "no-cache",
            "ETag": found.etag,
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        }
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.content_type, headers=headers)

    # -- overview ------------------------------------------------------------------------
    async def stats(self, request: Request) -> Response:
        await self.admin(request)
        return json_response({"counts": await self.queue.counts()})

    async def read_overview(self) -> dict[str, Any]:
        queue = self.queue
        counts, channels, paused, workers = await asyncio.gather(
            queue.counts(), queue.channels(), queue.pause_state(), queue.workers()
        )
        now = queue.clock.now()
        return {
            "now": iso(from_ts(now)),
            "counts": counts,
            "channels": [channel_dict(c, now) for c in channels],
            "paused": {"everything": paused.everything, "channels": list(paused.channels)},
            "workers": {
                "count": len(workers),
                "busy": sum(len(w.running) for w in workers),
                "concurrency": sum(w.concurrency for w in workers),
            },
        }

    async def overview(self, request: Request) -> Response:
        await self.admin(request)
        return json_response(await self.read_overview())

    async def overview_stream(self, request: Request) -> Response:
        await self.admin(request)
        first = await self.read_overview()
        return EventStream(self.watch(first, "overview", self.read_overview, "now"))

    async def throughput(self, request: Request) -> Response:
        await self.admin(request)
        q = request.query_params
        window = q.get("window") or "1h"
        bucket = q.get("bucket") or "1m"
        try:
            span = parse_duration(window, "window")
            step = parse_duration(bucket, "bucket")
        except ValidationError as exc:
            raise invalid(str(exc)) from None
        if span > 31 * 86400 or math.ceil(span / step) > MAX_BUCKETS:
            raise invalid(f"window must be at most 31d, in at most {MAX_BUCKETS} buckets")
        points = await self.queue.throughput(window=span, bucket=step)
        rows = [
            {"start": iso(p.start), "completed": p.completed, "failed": p.failed,
             "cancelled": p.cancelled}
            for p in points
        ]  # fmt: skip
        totals = {
            "completed": sum(p.completed for p in points),
            "failed": sum(p.failed for p in points),
            "cancelled": sum(p.cancelled for p in points),
        }
        return json_response({"window": span, "bucket": step, "points": rows, "totals": totals})

    async def pause_answer(self) -> dict[str, Any]:
        state = await self.queue.pause_state()
        return {"paused": {"everything": state.everything, "channels": list(state.channels)}}

    async def pause_all(self, request: Request) -> Response:
        await self.admin(request, changes=True)
        await self.queue.pause()
        return json_response(await self.pause_answer())

    async def resume_all(self, request: Request) -> Response:
        await self.admin(request, changes=True)
        await self.queue.resume()
        return json_response(await self.pause_answer())

    async def pause_channel(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in _PAUSE_ACTIONS:
            raise ApiError(404, "not_found", "no such route")
        await self.admin(request, changes=True)
        channel = request.path_params["channel"]
        if action == "pause":
            await self.queue.pause(channel)
        else:
            await self.queue.resume(channel)
        return json_response({"channel": channel, **(await self.pause_answer())})

    # -- jobs ----------------------------------------------------------------------------
    async def jobs(self, request: Request) -> Response:
        await self.admin(request)
        q = request.query_params
        query = JobQuery.from_params(q)
        limit = int_param(q.get("limit"), "limit", 1, 1000) or 50
        before = int_param(q.get("before"), "before", 1, 10**18)
        found = await self.queue.list_jobs(**query.kwargs(), limit=limit + 1, before_id=before)
        older = found[limit - 1].id if len(found) > limit else None
        return json_response({"jobs": [job_summary(j) for j in found[:limit]], "older": older})

    async def read_detail(self, job_id: int) -> dict[str, Any] | None:
        job = await self.queue.get_job(job_id)
        if job is None:
            return None
        events, logs = await asyncio.gather(
            self.queue.get_job_events(job_id), self.queue.get_job_logs(job_id)
        )
        return job_detail(job, events, logs)

    async def detail(self, request: Request) -> Response:
        await self.admin(request)
        found = await self.read_detail(self.job_id(request))
        if found is None:
            raise _job_not_found()
        return json_response(found)

    async def job_stream(self, request: Request) -> Response:
        await self.admin(request)
        job_id = self.job_id(request)
        first = await self.read_detail(job_id)
        if first is None:
            raise _job_not_found()

        async def read() -> dict[str, Any] | None:
            return await self.read_detail(job_id)

        return EventStream(self.watch(first, "job", read))

    async def job_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in _JOB_ACTIONS:
            raise ApiError(404, "not_found", "no such route")
        await self.admin(request, changes=True)
        if action != "delete":
            return json_response(job_summary(await self.web.act(request)))
        job_id = self.job_id(request)
        try:
            deleted = await self.queue.delete(job_id)
        except InvalidStateError:
            raise ApiError(
                409, "conflict", f"job {job_id} is running; cancel it before deleting it"
            ) from None
        if not deleted:
            raise _job_not_found()
        return json_response({"id": job_id, "deleted": True})

    # -- bulk actions --------------------------------------------------------------------
    async def bulk_preview(self, request: Request) -> Response:
        """What each bulk action would change for the filter (counted now)."""
        await self.admin(request)
        query = JobQuery.from_params(request.query_params)
        return json_response({"filter": query.as_dict(), **(await self.count(query))})

    async def count(self, query: JobQuery) -> dict[str, Any]:
        if query.counts_only:
            counts = await self.queue.counts(query.channel)
            per = {JobState(k): v for k, v in counts.items()}
            if query.state is not None:
                per = {s: (n if s is query.state else 0) for s, n in per.items()}
            return tally(per, capped=False)
        per = dict.fromkeys(JobState, 0)
        seen, before = 0, None
        while True:
            page = await self.queue.list_jobs(**query.kwargs(), limit=_PAGE, before_id=before)
            for job in page:
                per[job.state] += 1
            seen += len(page)
            if len(page) < _PAGE:
                return tally(per, capped=False)
            before = page[-1].id
            if seen >= BULK_PREVIEW_MAX:
                more = await self.queue.list_jobs(**query.kwargs(), limit=1, before_id=before)
                return tally(per, capped=bool(more))

    async def bulk(self, request: Request) -> Response:
        """Retry, cancel or delete every job matching the filter in the JSON body."""
        action = request.path_params["action"]
        if action not in _BULK:
            raise ApiError(404, "not_found", "no such route")
        await self.admin(request, changes=True)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise invalid("send the filter as a JSON object (Content-Type: application/json)")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise invalid("the body is not JSON") from None
        query = JobQuery.from_body(body)
        if action == "retry":
            count = await self.queue.retry_jobs(**query.kwargs())
        elif action == "delete":
            count = await self.queue.delete_jobs(**query.kwargs())
        else:
            count = await self.cancel_matching(query)
        return json_response({"action": action, "filter": query.as_dict(), "count": count})

    async def cancel_matching(self, query: JobQuery) -> int:
        """Cancel every matching job that has not finished (running ones are asked to
        stop, as :meth:`conveyor.Queue.cancel` does); the count."""
        if query.state is not None and query.state not in UNFINISHED:
            return 0
        count, before = 0, None
        while True:
            page = await self.queue.list_jobs(**query.kwargs(), limit=_PAGE, before_id=before)
            for job in page:
                if job.state in UNFINISHED and await self.queue.cancel(job.id):
                    count += 1
            if len(page) < _PAGE:
                return count
            before = page[-1].id

    # -- cron and workers ----------------------------------------------------------------
    async def cron(self, request: Request) -> Response:
        await self.admin(request)
        schedules = await self.queue.list_cron()
        now = self.queue.clock.now()
        return json_response(
            {"now": iso(from_ts(now)), "schedules": [schedule_dict(s) for s in schedules]}
        )

    async def cron_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in _CRON_ACTIONS:
            raise ApiError(404, "not_found", "no such route")
        await self.admin(request, changes=True)
        name = request.path_params["name"]
        if not any(s.name == name for s in await self.queue.list_cron()):
            raise ApiError(404, "not_found", "no such schedule")
        if action == "run":
            job_id = await self.queue.run_cron(name)
            return json_response({"name": name, "job_id": job_id})
        if action == "pause":
            await self.queue.pause_cron(name)
        else:
            await self.queue.resume_cron(name)
        found = [s for s in await self.queue.list_cron() if s.name == name]
        if not found:
            raise ApiError(404, "not_found", "no such schedule")
        return json_response({"schedule": schedule_dict(found[0])})

    async def workers(self, request: Request) -> Response:
        await self.admin(request)
        found = await self.queue.workers()
        now = self.queue.clock.now()
        return json_response({"now": iso(from_ts(now)), "workers": [worker_dict(w) for w in found]})

    # -- streams -------------------------------------------------------------------------
    async def watch(
        self,
        first: dict[str, Any],
        event: str,
        read: Callable[[], Awaitable[dict[str, Any] | None]],
        *volatile: str,
    ) -> AsyncIterator[bytes]:
        """``event`` with ``first`` at once, then with what ``read()`` answers whenever it
        changed (ignoring the ``volatile`` keys), every ``interval`` seconds; ``gone`` (a
        404 body) and the end when it answers None; a comment line after
        :data:`KEEPALIVE` quiet seconds; the end after :data:`STREAM_LIFETIME` (the
        browser reconnects). A store that fails skips one read."""
        loop = asyncio.get_running_loop()
        started = quiet_since = loop.time()
        last = without(first, *volatile)
        yield f"retry: {RECONNECT_MS}\n\n".encode() + sse(event, first)
        while loop.time() - started < STREAM_LIFETIME:
            await asyncio.sleep(self.interval)
            try:
                fresh = await read()
            except BackendError as exc:
                log.warning("web: a dashboard stream: the job store failed: %s", exc)
                fresh = last
            else:
                if fresh is None:
                    yield sse("gone", {"error": {"code": "not_found", "message": "gone"}})
                    return
                comparable = without(fresh, *volatile)
                if comparable != last:
                    last = comparable
                    quiet_since = loop.time()
                    yield sse(event, fresh)
                    continue
            if loop.time() - quiet_since >= KEEPALIVE:
                quiet_since = loop.time()
                yield b": keep-alive\n\n"
