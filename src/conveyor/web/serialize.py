"""The web-only JSON forms: the tenant-facing job status and the dashboard's list rows.

The full forms (:func:`conveyor.serialize.job_dict`, ``job_detail``) are shared with the
CLI and live in :mod:`conveyor.serialize`; these are subsets of them.
"""

from __future__ import annotations

from typing import Any

from conveyor.models import Job
from conveyor.serialize import job_dict

__all__ = ["job_status", "job_summary"]

STATUS_FIELDS = (
    "id",
    "name",
    "state",
    "attempts",
    "max_attempts",
    "progress",
    "result",
    "last_error",
    "created_at",
    "started_at",
    "finished_at",
    "tags",
)
SUMMARY_FIELDS = (
    "id",
    "name",
    "state",
    "attempts",
    "max_attempts",
    "progress",
    "tenant",
    "channel",
    "priority",
    "tags",
    "run_at",
    "created_at",
    "finished_at",
)


def job_status(job: Job) -> dict[str, Any]:
    """What ``GET {status_path}/{id}`` answers.

    The last error keeps its type and message but not its traceback: the status API
    faces tenants, and a traceback shows server code and paths. The dashboard (admins)
    shows the traceback.
    """
    full = job_dict(job)
    out = {key: full[key] for key in STATUS_FIELDS}
    if out["last_error"] is not None:
        out["last_error"] = {k: v for k, v in out["last_error"].items() if k != "traceback"}
    return out


def job_summary(job: Job) -> dict[str, Any]:
    """One row of the dashboard's job list (no payload, result or errors: lists stay small)."""
    full = job_dict(job)
    out = {key: full[key] for key in SUMMARY_FIELDS}
    last = job.last_error
    out["error"] = None if last is None else f"{last.get('type', '')}: {last.get('message', '')}"
    return out
