"""A Flask app that enqueues with ``queue.enqueue_sync`` (no event loop in a WSGI view).

    CONVEYOR_URL=sqlite:///jobs.db flask --app examples.flask_app.app run     # web
    CONVEYOR_URL=sqlite:///jobs.db conveyor worker examples.flask_app.jobs:queue

- ``POST /signup`` ``{"email": …}``: enqueues ``send-welcome``, answers 202 with its id.
- ``GET /jobs/<id>``: the job's state and result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from flask import Flask, abort, request

from examples.flask_app.jobs import queue

T = TypeVar("T")

app = Flask(__name__)

# Reads (get_job, list_jobs, counts) are async. A WSGI app runs them on one long-lived
# background loop, so connections are made once, not per request.
_loop = asyncio.new_event_loop()
threading.Thread(target=_loop.run_forever, name="conveyor-reads", daemon=True).start()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, _loop).result(timeout=30)


@app.post("/signup")
def signup() -> tuple[dict[str, Any], int]:
    email = (request.get_json(silent=True) or {}).get("email")
    if not isinstance(email, str) or "@" not in email:
        abort(400, "email required")
    # Your INSERT INTO users … goes here. enqueue_sync needs no event loop; with SQLite or
    # PostgreSQL, pass connection= to make the job part of that same transaction.
    job_id = queue.enqueue_sync("send-welcome", {"email": email})
    return {"job_id": job_id, "status": f"/jobs/{job_id}"}, 202


@app.get("/jobs/<int:job_id>")
def job_status(job_id: int) -> dict[str, Any]:
    # A real app checks that the caller may see this job, e.g. enqueue with
    # tenant=current_user.org and read with queue.get_job(job_id, tenant=...).
    job = run(queue.get_job(job_id))
    if job is None:
        abort(404)
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "attempts": job.attempts,
        "result": job.result,
        "last_error": job.last_error,
    }


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}
