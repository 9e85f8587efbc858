"""limit-redis key names and scripts, shared by the driver and the worker loop."""

from __future__ import annotations

from typing import Any

import redis

from bench.limits.files import load

PREFIX = "lim:"
ID, READY, ACTIVE, JOB = PREFIX + "id", PREFIX + "ready", PREFIX + "active", PREFIX + "job:"


def scripts(r: redis.Redis) -> tuple[Any, Any]:
    return r.register_script(load("redis/claim.lua")), r.register_script(load("redis/complete.lua"))


def enqueue_script(r: redis.Redis) -> Any:
    return r.register_script(load("redis/enqueue.lua"))


def enqueue_keys() -> list[str]:
    return [ID, READY, JOB]


def claim_keys() -> list[str]:
    return [READY, ACTIVE, JOB]


def complete_keys() -> list[str]:
    return [ACTIVE, JOB]
