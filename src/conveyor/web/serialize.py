"""The web-only JSON forms: the tenant-facing job status and the dashboard's list rows.

The full forms (:func:`conveyor.serialize.job_dict`, ``job_detail``) are shared with the
CLI and live in :mod:`conveyor.serialize`; these are subsets of them. And
:func:`renderable`, what an answer becomes when a stored value in it is nested too deeply
for the JSON encoder.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.models import Job
from conveyor.serialize import job_dict

__all__ = [
    "MAX_RENDER_NESTING",
    "TOO_DEEP",
    "encode_json",
    "job_status",
    "job_summary",
    "renderable",
]

#: The most levels of lists and objects a payload, result or event ``data`` is answered
#: with: the most enqueue accepts in a payload. The JSON encoder recurses, so a value
#: nested about as deep as the interpreter's recursion limit would fail the whole answer,
#: and how deep that is depends on the server's own stack; a fixed limit answers the same
#: wherever the app is mounted.
MAX_RENDER_NESTING = 100
#: What a value nested deeper is answered as, in its place.
TOO_DEEP = f"(not shown: nested more than {MAX_RENDER_NESTING} levels deep)"
# The keys whose values are users' data: replaced whole, never descended into.
_USER_DATA = frozenset({"payload", "result", "data"})
# How deep our own envelope goes (detail → events → event → data) before a value counts
# as data anyway.
_ENVELOPE = 4

STATUS_FIELDS = (
    "id",
    "name",
    "state",
    "attempts",
    "stalls",
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
    "stalls",
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


def _dumps(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def encode_json(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON (one line: strings escape their line breaks), as
    every answer is encoded. A payload, result or event ``data`` nested more than
    :data:`MAX_RENDER_NESTING` levels (a handler's result, or a payload stored before
    enqueue refused such depths) is answered as :data:`TOO_DEEP`, never as an error from
    the recursing encoder."""
    try:
        body = _dumps(content)
    except RecursionError:
        return _dumps(renderable(content))
    # Fewer brackets than levels allowed: nothing can be too deep, skip the walk.
    if body.count(b"[") + body.count(b"{") <= MAX_RENDER_NESTING:
        return body
    safe = renderable(content)
    return body if safe is content else _dumps(safe)


def _nesting(value: Any, limit: int) -> int:
    """Levels of lists and objects in ``value``, counted up to ``limit + 1`` (an
    iterative walk: a deep value cannot exhaust the stack)."""
    if not isinstance(value, dict | list | tuple):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return deepest


def renderable(answer: Any, key: str | None = None, level: int = 0) -> Any:
    """``answer`` with every value of users' data (a ``payload``, ``result`` or event
    ``data``) nested more than :data:`MAX_RENDER_NESTING` levels replaced by
    :data:`TOO_DEEP`; ``answer`` itself (the same object) when there is none.
    """
    if key in _USER_DATA or level >= _ENVELOPE:
        return TOO_DEEP if _nesting(answer, MAX_RENDER_NESTING) > MAX_RENDER_NESTING else answer
    if isinstance(answer, dict):
        new = {k: renderable(v, k, level + 1) for k, v in answer.items()}
        return answer if all(new[k] is v for k, v in answer.items()) else new
    if isinstance(answer, list | tuple):
        items = [renderable(v, key, level + 1) for v in answer]
        return answer if all(a is b for a, b in zip(items, answer, strict=True)) else items
    return answer
