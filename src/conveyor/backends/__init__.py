"""Picks a backend from a URL and imports its driver lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.errors import ValidationError

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.settings import Settings

__all__ = ["from_settings"]


def from_settings(settings: Settings) -> Backend:
    """The backend for ``settings.url``; raises ValidationError for an unknown scheme and
    a clear ImportError-based message when the extra is not installed."""
    url = settings.url
    if url.startswith("sqlite:"):
        from conveyor.backends.sqlite.backend import SQLiteBackend

        return SQLiteBackend(settings)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from conveyor.backends.postgres.backend import PostgresBackend
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ValidationError(
                f"PostgreSQL support needs the extra: pip install 'conveyor[postgres]' ({exc})"
            ) from exc
        backend: Backend = PostgresBackend(settings)
        return backend
    if url.startswith(("redis://", "rediss://")):
        try:
            from conveyor.backends.redis.backend import RedisBackend
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ValidationError(
                f"Redis support needs the extra: pip install 'conveyor[redis]' ({exc})"
            ) from exc
        redis_backend: Backend = RedisBackend(settings)
        return redis_backend
    raise ValidationError(f"unsupported URL {url!r}")
