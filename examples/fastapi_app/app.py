"""A FastAPI app that enqueues a job in a route and mounts conveyor's web app.

    CONVEYOR_URL=sqlite:///jobs.db EXAMPLE_ADMIN_TOKEN=s3cret \
        uvicorn examples.fastapi_app.app:app              # the web process
    CONVEYOR_URL=sqlite:///jobs.db conveyor worker examples.fastapi_app.jobs:queue

- ``POST /signup`` ``{"email": …}`` creates an account, enqueues ``send-welcome`` for it
  (tenant = the account) and answers 202 with the job id, its status URL and a session
  token (also set as a cookie).
- ``GET /jobs/api/jobs/{id}`` (conveyor's status API, mounted at ``/jobs``) answers the
  job's state to its own account only (``Authorization: Bearer <token>`` or the cookie).
- ``GET /jobs/dashboard``: the dashboard, for the admin (``/admin-login?token=…`` once).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel

from conveyor.web import Principal, create_app
from examples.fastapi_app.jobs import queue, send_welcome

# Your own auth goes here (sessions, JWTs, API keys). This demo keeps sessions in memory:
# token -> account id. The admin token comes from the environment; unset, nobody is admin.
ADMIN_TOKEN = os.environ.get("EXAMPLE_ADMIN_TOKEN", "")
SESSIONS: dict[str, str] = {}
COOKIE = "session"


def authenticate(request: Request) -> Principal | None:
    """conveyor asks this for every status, dashboard and metrics request."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    if not token:
        return None  # 401
    if ADMIN_TOKEN and hmac.compare_digest(token.encode(), ADMIN_TOKEN.encode()):
        return Principal(admin=True)
    account = SESSIONS.get(token)
    return None if account is None else Principal(tenant=account)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await queue.close()


app = FastAPI(lifespan=lifespan)
# Status API at /jobs/api/jobs/{id}, dashboard at /jobs/dashboard, metrics at /jobs/metrics.
app.mount("/jobs", create_app(queue, authenticate=authenticate))


class Signup(BaseModel):
    email: str


@app.post("/signup", status_code=202)
async def signup(body: Signup) -> JSONResponse:
    account = "acct_" + secrets.token_hex(6)  # your INSERT INTO accounts … goes here
    token = secrets.token_urlsafe(24)
    SESSIONS[token] = account
    # The request returns at once; a worker process sends the mail.
    job_id = await send_welcome.enqueue(
        {"email": body.email},
        tenant=account,  # the status API shows the job to this account only
    )
    content: dict[str, Any] = {
        "job_id": job_id,
        "status": f"/jobs/api/jobs/{job_id}",
        "token": token,
    }
    response = JSONResponse(content, status_code=202)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


@app.get("/admin-login")
async def admin_login(token: str) -> RedirectResponse:
    """Open once with ``?token=<EXAMPLE_ADMIN_TOKEN>``: sets the cookie the dashboard's
    own requests then carry."""
    if not ADMIN_TOKEN or not hmac.compare_digest(token.encode(), ADMIN_TOKEN.encode()):
        raise HTTPException(status_code=401, detail="bad token")
    response = RedirectResponse("/jobs/dashboard", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}
