"""Prometheus text exposition of the queue's job counts."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.models import JobState

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(counts: Mapping[str, int] | None) -> str:
    """The metrics page: ``conveyor_up`` and ``conveyor_jobs{state=…}`` per state.

    Args:
        counts: jobs per state, or None when the store did not answer (``conveyor_up 0``
            and no job counts, so a scrape never reports made-up zeros).

    Returns:
        Prometheus text format (version 0.0.4), ending with a newline.
    """
    lines = [
        "# HELP conveyor_up Whether the job store answered this scrape (1) or not (0).",
        "# TYPE conveyor_up gauge",
        f"conveyor_up {0 if counts is None else 1}",
    ]
    if counts is not None:
        lines += [
            "# HELP conveyor_jobs Jobs in the store, per state.",
            "# TYPE conveyor_jobs gauge",
        ]
        # States come from the enum, never from stored data: no label escaping needed.
        lines += [
            f'conveyor_jobs{{state="{state.value}"}} {int(counts.get(state.value, 0))}'
            for state in JobState
        ]
    return "\n".join(lines) + "\n"
