"""Every benchmarked system, in report order. Adapters are imported lazily, so ``--list``
works and one broken library does not take the others down."""

from __future__ import annotations

import importlib

from bench.adapters.base import Adapter

# name -> "module:Class" under bench.adapters; family order: sqlite, postgres, redis
SYSTEMS: dict[str, str] = {
    "conveyor-sqlite": "conveyor_adapter:ConveyorSqliteAdapter",
    "huey-sqlite": "huey_adapter:HueySqliteAdapter",
    "limit-sqlite": "limit_sqlite:LimitSqliteAdapter",
    "conveyor-postgres": "conveyor_adapter:ConveyorPostgresAdapter",
    "procrastinate": "procrastinate_adapter:ProcrastinateAdapter",
    "pgqueuer": "pgqueuer_adapter:PgqueuerAdapter",
    "saq-postgres": "saq_adapter:SaqPostgresAdapter",
    "limit-postgres": "limit_postgres:LimitPostgresAdapter",
    "conveyor-redis": "conveyor_adapter:ConveyorRedisAdapter",
    "saq-redis": "saq_adapter:SaqRedisAdapter",
    "arq": "arq_adapter:ArqAdapter",
    "rq": "rq_adapter:RqAdapter",
    "huey-redis": "huey_adapter:HueyRedisAdapter",
    "dramatiq": "dramatiq_adapter:DramatiqAdapter",
    "celery": "celery_adapter:CeleryAdapter",
    "limit-redis": "limit_redis:LimitRedisAdapter",
}

FAMILIES = ("sqlite", "postgres", "redis")


def adapter_class(name: str) -> type[Adapter]:
    module, cls = SYSTEMS[name].split(":")
    found: type[Adapter] = getattr(importlib.import_module(f"bench.adapters.{module}"), cls)
    return found


def baseline(family: str) -> str:
    return f"conveyor-{family}"
