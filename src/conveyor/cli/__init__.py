"""The ``conveyor`` command. Signal handling for workers lives here (via handle_signals).

Exit codes: 0 on success, 1 on an error (message on stderr), 2 on bad usage.

One module per area, each defining its click commands; :mod:`conveyor.cli.app` holds the
group (:func:`main`) and what they share. A new area is a new module plus one
``main.add_command`` line below. Commands use only the public :class:`conveyor.Queue`
API.
"""

from __future__ import annotations

from conveyor.cli import (
    channels,
    clean,
    cron,
    dashboard,
    enqueue,
    jobs,
    mcp,
    scaffold,
    skills,
    store,
    worker,
    workers,
)
from conveyor.cli.app import main

__all__ = ["main"]

main.add_command(channels.channels)
main.add_command(clean.clean)
main.add_command(cron.cron)
main.add_command(dashboard.dashboard)
main.add_command(enqueue.enqueue)
main.add_command(jobs.jobs)
main.add_command(jobs.stats)
main.add_command(mcp.install_mcp)
main.add_command(mcp.mcp)
main.add_command(scaffold.init)
main.add_command(skills.install_skills)
main.add_command(store.migrate)
main.add_command(worker.worker)
main.add_command(workers.workers)
