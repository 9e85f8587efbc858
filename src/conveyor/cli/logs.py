"""Logging for ``conveyor worker``: levels, and the text or JSON line format on stderr.

The worker logs through the ``conveyor`` logger; structured fields travel as ``extra``
attributes of each record (``job_id``, ``job_name``, ``attempt``, ``duration``,
``event``, ``error``, …). The text format shows the message (and a traceback, when there
is one, on the lines after it); the JSON format writes one object per line with
``time``, ``level``, ``logger``, ``message``, every structured field, and ``traceback``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["FORMATS", "JsonFormatter", "configure", "json_enabled", "log_error"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_json = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(log_format: str, *, verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr in ``log_format``: conveyor's records from INFO (``quiet``: from
    WARNING; ``verbose``: DEBUG), other libraries' from WARNING (``verbose`` >= 2: DEBUG)."""
    global _json
    _json = log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if _json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("conveyor").setLevel(level)


def json_enabled() -> bool:
    """Whether :func:`configure` chose the JSON format (errors are then logged as JSON)."""
    return _json


def log_error(message: str) -> None:
    """An error the command ends with, as a log record (for the JSON format)."""
    logging.getLogger("conveyor").error(message, extra={"event": "error"})
