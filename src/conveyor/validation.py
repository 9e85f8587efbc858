"""Every check on user input, in one place: names, options, durations, payloads.

An enqueue passes through here once: :class:`JobBuilder` turns each :class:`JobSpec` into
a :class:`NewJob` (the backend's input) or raises :class:`ValidationError` /
:class:`PayloadError` naming the problem, before anything is written. The same checks
serve job definitions, cron schedules, workers and queries, so a rule is written once.
Pure: no I/O, no event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor._json import ENCODER, has_surrogate
from conveyor.backends.base import JobFilter, NewJob
from conveyor.durations import parse_duration
from conveyor.errors import PayloadError, ValidationError
from conveyor.models import JobSpec, JobState
from conveyor.retry import Backoff

__all__ = [
    "MAX_DELAY",
    "MAX_NESTING",
    "MAX_TAGS",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TAG_MODES",
    "Defaults",
    "JobBuilder",
    "check_attempts",
    "check_backoff",
    "check_bool",
    "check_max_stalls",
    "check_priority",
    "check_timeout",
    "job_filter",
    "job_spec",
    "payload_json",
    "validate_name",
    "validate_names",
    "validate_tags",
]

PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
TAG_MODES = ("any", "all", "exact", "none")
MAX_DELAY = 100 * 365.25 * 86400.0  # seconds: anything later is a bug, not a schedule
MAX_TAGS = 100  # tags per job
MAX_NESTING = 100  # levels of lists and objects in a payload
BUILTIN_PREFIX = "conveyor."  # the built-in jobs' names (not the queue's own jobs)


def validate_name(value: object, what: str, *, max_len: int = 200) -> str:
    """A job name, channel, tag, group, tenant or key: any non-empty unicode text without
    control characters. It is always bound as a parameter, never spliced into SQL or Lua."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > max_len:
        raise ValidationError(f"{what} must be 1-{max_len} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{what} {value!r} contains a control character")
    if has_surrogate(value):
        raise ValidationError(
            f"{what} {value!r} contains a lone surrogate (not valid Unicode text; "
            "decode bytes with an error handler such as 'replace' first)"
        )
    return value


def validate_names(values: Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    """A list of names (worker channels, include, exclude); None or empty stays None."""
    if isinstance(values, str):
        raise ValidationError(f"{what} takes a list of names, not a string")
    return tuple(validate_name(v, what) for v in values) if values else None


def validate_tags(tags: Any) -> tuple[str, ...]:
    """Tags as a tuple of unique names, in the order given."""
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError(f"tags must be a list of strings, got {tags!r}")
    if not tags:
        return ()
    out = tuple(dict.fromkeys(validate_name(t, "tag") for t in tags))
    if len(out) > MAX_TAGS:
        raise ValidationError(f"a job takes at most {MAX_TAGS} tags, got {len(out)}")
    return out


def check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"priority must be an int, got {value!r}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValidationError(f"priority {value} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}")
    return value


def check_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise ValidationError(f"attempts must be an int from 1 to 10000, got {value!r}")
    return value


def check_max_stalls(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise ValidationError(f"max_stalls must be an int from 0 to 1000, got {value!r}")
    return value


def check_timeout(value: object) -> float:
    return parse_duration(value, "timeout")


def check_backoff(value: object) -> Backoff:
    if not isinstance(value, Backoff):
        raise ValidationError(
            "backoff must be a conveyor.Backoff (Backoff.fixed(...) or Backoff.exponential(...))"
        )
    return value


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be True or False, got {value!r}")
    return value


def payload_json(payload: Any, limit: int) -> str:
    """The payload as JSON text, at most ``limit`` UTF-8 bytes."""
    try:
        text = ENCODER.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {exc}") from None
    if text.isascii():
        size = len(text)
    else:
        if has_surrogate(text):
            raise PayloadError(
                "payload contains a lone surrogate (not valid Unicode text; decode bytes "
                "with an error handler such as 'replace' first)"
            )
        size = len(text.encode("utf-8"))
    if size > limit:
        raise PayloadError(f"payload is {size} bytes of JSON, over max_payload_bytes={limit}")
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting(payload) > MAX_NESTING:
        raise PayloadError(
            f"payload is nested more than {MAX_NESTING} levels deep (lists and objects)"
        )
    return text


def _nesting(value: Any) -> int:
    """How many levels of lists and objects ``value`` has (an iterative walk, so a deep
    value cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return deepest


def job_spec(name: str, payload: Any, options: Mapping[str, Any]) -> JobSpec:
    """A :class:`JobSpec` from enqueue keyword options; an unknown option is a
    ValidationError naming it."""
    try:
        return JobSpec(name, payload, **options)
    except TypeError as exc:
        raise ValidationError(f"bad enqueue option: {exc}") from None


def _run_at(spec: JobSpec, now: float) -> float:
    if spec.run_at is not None and spec.delay is not None:
        raise ValidationError("give run_at= or delay=, not both")
    if spec.run_at is not None:
        if not isinstance(spec.run_at, datetime):
            raise ValidationError(f"run_at must be a datetime, got {type(spec.run_at).__name__}")
        if spec.run_at.tzinfo is None or spec.run_at.utcoffset() is None:
            raise ValidationError("run_at must be timezone-aware (naive datetimes are refused)")
        try:
            run_at = max(now, spec.run_at.timestamp())
        except (OverflowError, ValueError, OSError):
            raise ValidationError(f"run_at {spec.run_at!r} is out of range") from None
        if run_at > now + MAX_DELAY:
            raise ValidationError(f"run_at {spec.run_at.isoformat()} is more than 100 years away")
        return run_at
    if spec.delay is not None:
        delay = parse_duration(spec.delay, "delay", positive=False)
        if delay > MAX_DELAY:
            raise ValidationError(
                f"delay must be seconds from 0 to {MAX_DELAY:.0f} (100 years), got {spec.delay!r}"
            )
        return now + delay
    return now


class Defaults(Protocol):
    """What a registered job definition contributes to its jobs' options."""

    channel: str
    attempts: int
    max_stalls: int
    priority: int
    remove_on_complete: bool
    remove_on_fail: bool


class JobBuilder:
    """Turns enqueue specs into validated :class:`NewJob` rows.

    Args:
        max_payload_bytes: the payload size limit.
        definitions: the registered jobs by name (read, never changed), whose defaults
            fill the options a spec leaves out.
    """

    def __init__(
        self,
        max_payload_bytes: int,
        definitions: Mapping[str, Defaults],
        *,
        strict_names: bool = False,
        require_tenant: bool = False,
    ):
        self.max_payload_bytes = max_payload_bytes
        self.definitions = definitions
        self.strict_names = strict_names
        self.require_tenant = require_tenant
        self._known_names: set[str] = set()  # names already validated (a bounded cache)

    def _unknown(self, name: str) -> None:
        """Refuse a name no registered job has, when strict and this queue has jobs of
        its own (an enqueue-only process, with none, may enqueue any name)."""
        if not self.strict_names or all(n.startswith(BUILTIN_PREFIX) for n in self.definitions):
            return
        own = sorted(n for n in self.definitions if not n.startswith(BUILTIN_PREFIX))
        if own:
            shown = ", ".join(repr(n) for n in own[:10]) + (", …" if len(own) > 10 else "")
            raise ValidationError(
                f"no job named {name!r} is registered on this queue (registered: {shown}); "
                "pass strict_names=False (CONVEYOR_STRICT_NAMES=false) to enqueue jobs that "
                "other processes handle"
            )

    def build_many(self, specs: Iterable[JobSpec], now: float) -> list[NewJob]:
        """Every spec checked before any is returned: one bad spec and nothing is built."""
        jobs = []
        refs: dict[int, int] = {}  # id(spec) -> its position, for depends_on=[spec]
        for i, spec in enumerate(specs):
            if not isinstance(spec, JobSpec):
                raise ValidationError(
                    f"enqueue_many takes JobSpec items; item {i} is {type(spec).__name__}"
                )
            jobs.append(self.build(spec, now, refs=refs))
            refs.setdefault(id(spec), i)
        return jobs

    def build(
        self,
        spec: JobSpec,
        now: float,
        extra_options: Mapping[str, Any] | None = None,
        *,
        system: bool = False,
        checked_name: bool = False,
        refs: Mapping[int, int] | None = None,
    ) -> NewJob:
        """One spec as a row; ``extra_options`` are stored with the job's options (cron
        information, for instance). ``system`` jobs (a schedule's) need no tenant;
        ``checked_name``: the name was checked when the schedule was stored, so a process
        without that job registered can still fire it."""
        name = spec.name
        if not (type(name) is str and name in self._known_names):
            validate_name(name, "job name")
            if len(self._known_names) < 10_000:
                self._known_names.add(name)
        d = self.definitions.get(name)
        if d is None and not checked_name:
            self._unknown(name)
        if self.require_tenant and spec.tenant is None and not system:
            raise ValidationError(
                f"job {name!r}: this queue requires a tenant (require_tenant=True); pass "
                "tenant=…, e.g. tenant='system' for system jobs"
            )
        payload = payload_json(spec.payload, self.max_payload_bytes)
        if (
            spec.run_at is None
            and spec.delay is None
            and spec.priority is None
            and spec.channel is None
            and spec.attempts is None
            and spec.max_stalls is None
            and spec.backoff is None
            and spec.timeout is None
            and spec.kill_on_timeout is None
            and spec.remove_on_complete is None
            and spec.remove_on_fail is None
            and (d is None or not d.remove_on_fail)  # stored in the options
            and spec.idempotency_key is None
            and spec.group is None
            and spec.tenant is None
            and not extra_options
            and spec.tags == ()
            and not spec.depends_on
            and spec.on_dependency_failure is None
            and spec.unique_for is None
            and spec.unique_states is None
        ):
            # the common case, name and payload only: the definition's defaults
            if d is None:
                return NewJob(name, payload, JobState.QUEUED, now, 0, "default", 1, None,
                              False, None, (), None, None)  # fmt: skip
            return NewJob(name, payload, JobState.QUEUED, now, d.priority, d.channel,
                          d.attempts, None, bool(d.remove_on_complete), None, (), None,
                          None, max_stalls=d.max_stalls)  # fmt: skip
        run_at = _run_at(spec, now)
        priority = (
            check_priority(spec.priority) if spec.priority is not None else (d.priority if d else 0)
        )
        channel = (
            validate_name(spec.channel, "channel")
            if spec.channel is not None
            else (d.channel if d else "default")
        )
        attempts = (
            check_attempts(spec.attempts) if spec.attempts is not None else (d.attempts if d else 1)
        )
        max_stalls = (
            check_max_stalls(spec.max_stalls)
            if spec.max_stalls is not None
            else (d.max_stalls if d else 1)
        )
        options: dict[str, Any] = dict(extra_options) if extra_options else {}
        if spec.backoff is not None:
            options["backoff"] = check_backoff(spec.backoff).to_dict()
        if spec.timeout is not None:
            options["timeout"] = check_timeout(spec.timeout)
        if spec.kill_on_timeout is not None:
            options["kill_on_timeout"] = check_bool(spec.kill_on_timeout, "kill_on_timeout")
        if spec.remove_on_complete is not None:
            remove = check_bool(spec.remove_on_complete, "remove_on_complete")
        else:
            remove = d.remove_on_complete if d else False
        if spec.remove_on_fail is not None:
            remove_on_fail = check_bool(spec.remove_on_fail, "remove_on_fail")
        else:
            remove_on_fail = bool(d.remove_on_fail) if d else False
        if remove_on_fail:  # the core reads it from the options when a run fails finally
            options["remove_on_fail"] = True
        key = (
            validate_name(spec.idempotency_key, "idempotency_key", max_len=512)
            if spec.idempotency_key is not None
            else None
        )
        unique_for = unique_states = None
        if spec.unique_for is not None or spec.unique_states is not None:
            if key is None:
                raise ValidationError(
                    "unique_for and unique_states refine idempotency_key: give one"
                )
            if spec.unique_for is not None:
                unique_for = parse_duration(spec.unique_for, "unique_for")
            if spec.unique_states is not None:
                unique_states = _states(spec.unique_states)
        failure = spec.on_dependency_failure
        if failure is not None and failure not in ("cancel", "run"):
            raise ValidationError(
                f"on_dependency_failure must be 'cancel' or 'run', got {failure!r}"
            )
        return NewJob(
            name=name,
            payload=payload,
            state=JobState.SCHEDULED if run_at > now else JobState.QUEUED,
            run_at=run_at,
            priority=priority,
            channel=channel,
            max_attempts=attempts,
            options=json.dumps(options) if options else None,
            remove_on_complete=bool(remove),
            remove_on_fail=remove_on_fail,
            idempotency_key=key,
            tags=validate_tags(spec.tags),
            group=validate_name(spec.group, "group") if spec.group is not None else None,
            tenant=validate_name(spec.tenant, "tenant") if spec.tenant is not None else None,
            max_stalls=max_stalls,
            depends_on=_dependencies(spec, refs) if spec.depends_on else (),
            on_dependency_failure=failure or "cancel",
            unique_for=unique_for,
            unique_states=unique_states,
        )


MAX_DEPENDENCIES = 10_000


def _dependencies(spec: JobSpec, refs: Mapping[int, int] | None) -> tuple[int, ...]:
    """``depends_on`` as backend refs: a stored job's id (>= 1), or ``-k`` for the k-th
    spec (1-based) of the same call, which must come earlier (so no cycle can form)."""
    items = spec.depends_on
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise ValidationError(f"depends_on takes a list of job ids or JobSpecs, got {items!r}")
    out: list[int] = []
    for item in items:
        if isinstance(item, JobSpec):
            position = None if refs is None else refs.get(id(item))
            if position is None:
                what = "itself" if item is spec else "a JobSpec that is not earlier in this call"
                raise ValidationError(
                    f"job {spec.name!r} depends on {what}: a spec may depend only on job ids "
                    "and on specs that come before it in the same enqueue_many (no cycles)"
                )
            out.append(-(position + 1))
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            out.append(item)
        else:
            raise ValidationError(f"depends_on holds job ids (ints >= 1) or JobSpecs, got {item!r}")
    if len(out) > MAX_DEPENDENCIES:
        raise ValidationError(
            f"a job may depend on at most {MAX_DEPENDENCIES} jobs, got {len(out)}"
        )
    return tuple(dict.fromkeys(out))


def _states(states: Any) -> tuple[str, ...]:
    if isinstance(states, str) or not isinstance(states, Iterable):
        raise ValidationError(f"unique_states takes a list of job states, got {states!r}")
    out = []
    for state in states:
        try:
            out.append(JobState(state).value)
        except ValueError:
            raise ValidationError(
                f"unknown state {state!r} in unique_states; expected some of "
                f"{[s.value for s in JobState]}"
            ) from None
    if not out:
        raise ValidationError("unique_states needs at least one state")
    return tuple(dict.fromkeys(out))


def job_filter(
    state: JobState | str | None = None,
    name: str | None = None,
    channel: str | None = None,
    tags: Sequence[str] | None = None,
    tag_mode: str = "any",
    tenant: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
    name_prefix: str | None = None,
) -> JobFilter:
    """A checked query filter for listing or cancelling jobs."""
    if name_prefix is not None and (not isinstance(name_prefix, str) or not name_prefix):
        raise ValidationError(f"name_prefix must be a non-empty str, got {name_prefix!r}")
    if state is not None:
        try:
            state = JobState(state)
        except ValueError:
            raise ValidationError(
                f"unknown state {state!r}; expected one of {[s.value for s in JobState]}"
            ) from None
    if tag_mode not in TAG_MODES:
        raise ValidationError(f"tag_mode must be one of {TAG_MODES}, got {tag_mode!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValidationError(f"limit must be an int from 1 to 10000, got {limit!r}")
    return JobFilter(
        state=state,
        name=name,
        channel=channel,
        tags=validate_tags(tags) if tags is not None else None,
        tag_mode=tag_mode,
        tenant=tenant,
        limit=limit,
        before_id=before_id,
        name_prefix=name_prefix,
    )
