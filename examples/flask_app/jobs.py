"""The queue and its jobs, imported by the Flask app (to enqueue) and the worker (to run).

conveyor worker examples.flask_app.jobs:queue
"""

from __future__ import annotations

from typing import Any

import conveyor

queue = conveyor.Queue()  # CONVEYOR_URL, else sqlite:///conveyor.db in the current directory


@queue.job("send-welcome", attempts=3)
def send_welcome(payload: dict[str, Any], ctx: conveyor.Context) -> dict[str, Any]:
    # A plain `def` handler runs in the worker's thread pool: fine for blocking client
    # libraries. At-least-once: make the side effect idempotent.
    ctx.log.info("sending the welcome mail to %s", payload["email"])
    return {"sent_to": payload["email"], "template": "welcome"}
