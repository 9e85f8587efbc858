"""Picks a backend for a store kind and imports its driver lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.errors import ValidationError

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.settings import Settings

__all__ = ["backend_class", "from_settings"]

_EXTRA = {"postgres": "PostgreSQL", "redis": "Redis"}


def backend_class(settings: Settings) -> type[Backend]:
    """The backend class for ``settings.store`` (its capability flags can be read before
    anything connects); raises ValidationError naming the extra to install when its
    driver is missing."""
    try:
        if settings.store == "sqlite":
            from conveyor.backends.sqlite.backend import SQLiteBackend

            return SQLiteBackend
        if settings.store == "postgres":
            from conveyor.backends.postgres.backend import PostgresBackend

            return PostgresBackend
        if settings.store == "redis":
            from conveyor.backends.redis.backend import RedisBackend

            return RedisBackend
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ValidationError(
            f"{_EXTRA.get(settings.store, settings.store)} support needs the extra: "
            f"pip install 'conveyor[{settings.store}]' ({exc})"
        ) from exc
    raise ValidationError(f"unsupported store {settings.store!r}")  # pragma: no cover


def from_settings(settings: Settings) -> Backend:
    """A new, unconnected backend for ``settings``."""
    return backend_class(settings)(settings)
