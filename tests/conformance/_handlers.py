"""Handlers importable by name, for ``kill_on_timeout=True`` (run in a child process)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def write_pid_and_hang(payload: dict[str, Any], ctx: Any) -> None:
    """Record the child's pid, then run far past any test timeout."""
    Path(payload["pid_file"]).write_text(str(os.getpid()))
    time.sleep(60)


def add_in_child(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Finish normally in the child: the result travels back as JSON."""
    ctx.log.info("child %s", os.getpid())
    ctx.set_progress(50)
    return {"sum": payload["a"] + payload["b"], "pid": os.getpid()}


def raise_in_child(payload: dict[str, Any], ctx: Any) -> None:
    raise ValueError(f"child says {payload['word']}")
