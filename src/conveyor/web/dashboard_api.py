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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor.clock import from_ts
from conveyor.durations import parse_duration
from conveyor.errors import BackendError, InvalidStateError, ValidationError
from conveyor.models import ChannelInfo, JobState, WorkerInfo
from conveyor.serialize import iso, job_detail, schedule_dict
from conveyor.web import dashboard
from conveyor.web.app import ApiError, check_same_origin
from conveyor.web.serialize import encode_json, job_summary
from conveyor.web.stream import KEEPALIVE, RECONNECT_MS, EventStream, sse

if TYPE_CHECKING:
    from conveyor.queue import Queue
    from conveyor.web.app import _Web

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
UNFINISHED = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.WAITING, JobState.RUNNING})
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED})
_FILTER_KEYS = ("state", "name", "prefix", "channel", "tenant", "tag", "tag_mode")
_BULK = ("retry", "cancel", "delete")
_JOB_ACTIONS = ("retry", "cancel", "delete")
_CRON_ACTIONS = ("pause", "resume", "run")
_PAUSE_ACTIONS = ("pause", "resume")
_NOSNIFF = "nosniff"


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return encode_json(content)


def _json(data: Any, status: int = 200) -> Response:
    return _Json(
        data, status, headers={"Cache-Control": "no-store", "X-Content-Type-Options": _NOSNIFF}
    )


def _job_not_found() -> ApiError:
    return ApiError(404, "not_found", "job not found")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def _int_param(raw: str | None, name: str, lo: int, hi: int) -> int | None:
    """An integer query parameter from ``lo`` to ``hi``, None when absent or empty."""
    if raw is None or raw == "":
        return None
    if not _INT.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise _invalid(f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The filter of the job list and of the bulk actions: every given field must match.

    ``name`` is an exact name, ``prefix`` a name prefix, ``tags`` with ``tag_mode``
    (``any`` or ``all``) the tags.
    """

    state: JobState | None = None
    name: str | None = None
    prefix: str | None = None
    channel: str | None = None
    tenant: str | None = None
    tags: tuple[str, ...] | None = None
    tag_mode: str = "any"

    @classmethod
    def parse(cls, get: Callable[[str], list[str]]) -> JobQuery:
        """From ``get(key)``: the values given for ``key`` (empty ones are ignored)."""

        def one(key: str) -> str | None:
            values = [v for v in get(key) if v != ""]
            if len(values) > 1:
                raise _invalid(f"{key} is given more than once")
            return values[0] if values else None

        state = one("state")
        if state is not None and state not in {s.value for s in JobState}:
            raise _invalid(
                f"unknown state {state!r}; expected one of {[s.value for s in JobState]}"
            )
        tags = tuple(dict.fromkeys(v for v in get("tag") if v != "")) or None
        tag_mode = one("tag_mode") or "any"
        if tag_mode not in ("any", "all"):
            raise _invalid(f"tag_mode must be any or all, got {tag_mode!r}")
        return cls(
            state=JobState(state) if state else None,
            name=one("name"),
            prefix=one("prefix"),
            channel=one("channel"),
            tenant=one("tenant"),
            tags=tags,
            tag_mode=tag_mode,
        )

    @classmethod
    def from_params(cls, params: Any) -> JobQuery:
        """From a query string (Starlette's ``QueryParams``)."""
        return cls.parse(params.getlist)

    @classmethod
    def from_body(cls, body: Any) -> JobQuery:
        """From a JSON object with the query string's keys (``tag``: a string or a list)."""
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object with the filter")
        unknown = sorted(set(body) - set(_FILTER_KEYS))
        if unknown:
            raise _invalid(f"unknown filter keys {unknown}; known: {list(_FILTER_KEYS)}")

        def get(key: str) -> list[str]:
            value = body.get(key)
            if value is None:
                return []
            values = value if isinstance(value, list) and key == "tag" else [value]
            if not all(isinstance(v, str) for v in values):
                raise _invalid(f"{key} must be a string (tag: a string or a list of them)")
            return list(values)

        return cls.parse(get)

    def kwargs(self) -> dict[str, Any]:
        """The filter as keyword arguments of ``list_jobs``, ``retry_jobs``, ``delete_jobs``."""
        return {
            "state": self.state,
            "name": self.name,
            "name_prefix": self.prefix,
            "channel": self.channel,
            "tenant": self.tenant,
            "tags": list(self.tags) if self.tags else None,
            "tag_mode": self.tag_mode,
        }

    def as_dict(self) -> dict[str, Any]:
        """The filter as answered (only the given fields)."""
        out: dict[str, Any] = {
            "state": self.state.value if self.state else None,
            "name": self.name,
            "prefix": self.prefix,
            "channel": self.channel,
            "tenant": self.tenant,
            "tag": list(self.tags) if self.tags else None,
        }
        if self.tags and len(self.tags) > 1:
            out["tag_mode"] = self.tag_mode
        return {k: v for k, v in out.items() if v is not None}

    @property
    def counts_only(self) -> bool:
        """Whether ``queue.counts(channel)`` answers this filter exactly (state and channel
        at most)."""
        return not (self.name or self.prefix or self.tenant or self.tags)


def channel_dict(channel: ChannelInfo, now: float) -> dict[str, Any]:
    oldest = channel.oldest_queued_at
    age = None if oldest is None else round(max(0.0, now - oldest.timestamp()), 1)
    return {
        "name": channel.name,
        "counts": dict(channel.counts),
        "paused": channel.paused,
        "oldest_queued_at": iso(oldest),
        "oldest_queued_age": age,
        "limits": limits_dict(channel.limits),
    }


def limits_dict(limits: Any) -> dict[str, Any] | None:
    """A channel's stored limits (``queue.set_channel_limits``), or None."""
    if limits is None:
        return None
    rate = limits.rate
    return {
        "concurrency": limits.concurrency,
        "rate": None if rate is None else {"n": rate.n, "per": rate.seconds},
        "fair_by": limits.fair_by,
    }


def worker_dict(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "channels": list(worker.channels) if worker.channels is not None else None,
        "concurrency": worker.concurrency,
        "busy": len(worker.running),
        "running": list(worker.running),
        "started_at": iso(worker.started_at),
        "last_seen": iso(worker.last_seen),
    }


def _without(data: dict[str, Any], *volatile: str) -> dict[str, Any]:
    """``data`` without the keys that change on every read (for comparing snapshots)."""
    out = {k: v for k, v in data.items() if k not in volatile}
    if "channels" in out:
        out["channels"] = [
            {k: v for k, v in c.items() if k != "oldest_queued_age"} for c in out["channels"]
        ]
    return out


class DashboardApi:
    """The dashboard's route handlers.

    Args:
        web: the app's handlers, whose guards (``principal``, ``available``, ``job``,
            ``act``) these use.
        prefix: the dashboard's path (``""`` at the root).
        interval: seconds between two reads of a stream.
    """

    def __init__(self, web: _Web, prefix: str, interval: float) -> None:
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
        return _json({"counts": await self.queue.counts()})

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
        return _json(await self.read_overview())

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
            raise _invalid(str(exc)) from None
        if span > 31 * 86400 or math.ceil(span / step) > MAX_BUCKETS:
            raise _invalid(f"window must be at most 31d, in at most {MAX_BUCKETS} buckets")
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
        return _json({"window": span, "bucket": step, "points": rows, "totals": totals})

    async def pause_answer(self) -> dict[str, Any]:
        state = await self.queue.pause_state()
        return {"paused": {"everything": state.everything, "channels": list(state.channels)}}

    async def pause_all(self, request: Request) -> Response:
        await self.admin(request, changes=True)
        await self.queue.pause()
        return _json(await self.pause_answer())

    async def resume_all(self, request: Request) -> Response:
        await self.admin(request, changes=True)
        await self.queue.resume()
        return _json(await self.pause_answer())

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
        return _json({"channel": channel, **(await self.pause_answer())})

    # -- jobs ----------------------------------------------------------------------------
    async def jobs(self, request: Request) -> Response:
        await self.admin(request)
        q = request.query_params
        query = JobQuery.from_params(q)
        limit = _int_param(q.get("limit"), "limit", 1, 1000) or 50
        before = _int_param(q.get("before"), "before", 1, 10**18)
        found = await self.queue.list_jobs(**query.kwargs(), limit=limit + 1, before_id=before)
        older = found[limit - 1].id if len(found) > limit else None
        return _json({"jobs": [job_summary(j) for j in found[:limit]], "older": older})

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
        return _json(found)

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
            return _json(job_summary(await self.web.act(request)))
        job_id = self.job_id(request)
        try:
            deleted = await self.queue.delete(job_id)
        except InvalidStateError:
            raise ApiError(
                409, "conflict", f"job {job_id} is running; cancel it before deleting it"
            ) from None
        if not deleted:
            raise _job_not_found()
        return _json({"id": job_id, "deleted": True})

    # -- bulk actions --------------------------------------------------------------------
    async def bulk_preview(self, request: Request) -> Response:
        """What each bulk action would change for the filter (counted now)."""
        await self.admin(request)
        query = JobQuery.from_params(request.query_params)
        return _json({"filter": query.as_dict(), **(await self.count(query))})

    async def count(self, query: JobQuery) -> dict[str, Any]:
        if query.counts_only:
            counts = await self.queue.counts(query.channel)
            per = {JobState(k): v for k, v in counts.items()}
            if query.state is not None:
                per = {s: (n if s is query.state else 0) for s, n in per.items()}
            return _tally(per, capped=False)
        per = dict.fromkeys(JobState, 0)
        seen, before = 0, None
        while True:
            page = await self.queue.list_jobs(**query.kwargs(), limit=_PAGE, before_id=before)
            for job in page:
                per[job.state] += 1
            seen += len(page)
            if len(page) < _PAGE:
                return _tally(per, capped=False)
            before = page[-1].id
            if seen >= BULK_PREVIEW_MAX:
                more = await self.queue.list_jobs(**query.kwargs(), limit=1, before_id=before)
                return _tally(per, capped=bool(more))

    async def bulk(self, request: Request) -> Response:
        """Retry, cancel or delete every job matching the filter in the JSON body."""
        action = request.path_params["action"]
        if action not in _BULK:
            raise ApiError(404, "not_found", "no such route")
        await self.admin(request, changes=True)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise _invalid("send the filter as a JSON object (Content-Type: application/json)")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise _invalid("the body is not JSON") from None
        query = JobQuery.from_body(body)
        if action == "retry":
            count = await self.queue.retry_jobs(**query.kwargs())
        elif action == "delete":
            count = await self.queue.delete_jobs(**query.kwargs())
        else:
            count = await self.cancel_matching(query)
        return _json({"action": action, "filter": query.as_dict(), "count": count})

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
        return _json({"now": iso(from_ts(now)), "schedules": [schedule_dict(s) for s in schedules]})

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
            return _json({"name": name, "job_id": job_id})
        if action == "pause":
            await self.queue.pause_cron(name)
        else:
            await self.queue.resume_cron(name)
        found = [s for s in await self.queue.list_cron() if s.name == name]
        if not found:
            raise ApiError(404, "not_found", "no such schedule")
        return _json({"schedule": schedule_dict(found[0])})

    async def workers(self, request: Request) -> Response:
        await self.admin(request)
        found = await self.queue.workers()
        now = self.queue.clock.now()
        return _json({"now": iso(from_ts(now)), "workers": [worker_dict(w) for w in found]})

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
        last = _without(first, *volatile)
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
                comparable = _without(fresh, *volatile)
                if comparable != last:
                    last = comparable
                    quiet_since = loop.time()
                    yield sse(event, fresh)
                    continue
            if loop.time() - quiet_since >= KEEPALIVE:
                quiet_since = loop.time()
                yield b": keep-alive\n\n"


def _tally(per: Mapping[JobState, int], *, capped: bool) -> dict[str, Any]:
    """What each bulk action would change, from the matching jobs per state."""
    return {
        "matching": sum(per.values()),
        "retry": sum(n for s, n in per.items() if s in RETRYABLE),
        "cancel": sum(n for s, n in per.items() if s in UNFINISHED),
        "delete": sum(n for s, n in per.items() if s is not JobState.RUNNING),
        "by_state": {s.value: n for s, n in per.items()},
        "capped": capped,
    }
