"""The SQL and Lua of the limit rows live in files beside this module, loaded once."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def load(relative: str) -> str:
    return (HERE / relative).read_text()


def path(relative: str) -> Path:
    return HERE / relative
