"""What the numbers were measured on: hardware, servers and library versions."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from typing import Any

from bench.config import PG_ADMIN_DB, ROOT, pg_url

PACKAGES = (
    "conveyor", "procrastinate", "pgqueuer", "saq", "arq", "rq", "huey", "dramatiq", "celery",
    "kombu", "redis", "hiredis", "psycopg", "psycopg-pool", "asyncpg", "typer",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return round(kib / 2**20, 1)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _postgres() -> dict[str, Any]:
    try:
        import psycopg

        with psycopg.connect(pg_url(PG_ADMIN_DB), connect_timeout=3) as conn:
            out = {}
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
                row = conn.execute(f"SHOW {name}").fetchone()
                out[name] = row[0] if row else None
            return out
    except Exception as exc:
        return {"error": str(exc)}


def _redis() -> dict[str, Any]:
    try:
        import redis

        from bench.config import REDIS_HOST, REDIS_PORT

        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3) as r:
            info = r.info("server")
            return {
                "redis_version": info.get("redis_version"),
                "save": r.config_get("save").get("save"),
                "appendonly": r.config_get("appendonly").get("appendonly"),
            }
    except Exception as exc:
        return {"error": str(exc)}


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe() -> dict[str, Any]:
    from bench.adapters.limit_postgres import find_pgbench

    pgbench = find_pgbench()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": _postgres(),
        "redis": _redis(),
        "pgbench": pgbench or "not found (psycopg loop)",
        "packages": _versions(),
        "conveyor_commit": _git("rev-parse", "--short", "HEAD")
        + (" (dirty)" if _git("status", "--porcelain", "--", "src") else ""),
    }


def summary(m: dict[str, Any]) -> str:
    pg, rd = m.get("postgres", {}), m.get("redis", {})
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; PostgreSQL {pg.get('server_version', '?')} "
        f"(fsync={pg.get('fsync', '?')}, synchronous_commit={pg.get('synchronous_commit', '?')}), "
        f"Redis {rd.get('redis_version', '?')} (save={rd.get('save', '?')!r}, "
        f"appendonly={rd.get('appendonly', '?')}), SQLite {m['sqlite']}; "
        f"conveyor {m['conveyor_commit']}"
    )
