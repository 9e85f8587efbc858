"""Loads named queries from a ``.sql`` file: blocks that start with ``-- name: <name>``."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_queries", "read_sql"]

_NAME = re.compile(r"^--\s*name:\s*([A-Za-z0-9_]+)\s*$", re.MULTILINE)


def read_sql(package: str, filename: str) -> str:
    """The text of a packaged ``.sql`` file."""
    return resources.files(package).joinpath(filename).read_text(encoding="utf-8")


def load_queries(package: str, filename: str) -> dict[str, str]:
    """``{name: sql}`` for every ``-- name:`` block in the file (loaded once per backend)."""
    text = read_sql(package, filename)
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for i in range(1, len(parts), 2):
        body = parts[i + 1].strip()
        if not body:
            raise ValueError(f"query {parts[i]!r} in {filename} is empty")
        queries[parts[i]] = body
    return queries
