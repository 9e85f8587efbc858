"""The queue and the order jobs. The worker imports this through ``shop.worker``
(Django set up first); views and commands import it as any module."""

from typing import Any

from django.conf import settings
from django.db import close_old_connections

import conveyor
from orders.models import Order

queue = conveyor.Queue(settings.CONVEYOR_URL)


@queue.job("confirm-order", attempts=5)
def confirm_order(payload: dict[str, Any], ctx: conveyor.Context) -> dict[str, Any]:
    # A plain `def`: the Django ORM is sync-only, and sync handlers run in the worker's
    # thread pool. The job is delivered at least once, so the update is idempotent: a
    # second run finds the order already confirmed and changes nothing.
    try:
        updated = Order.objects.filter(pk=payload["order_id"], status="pending").update(
            status="confirmed"
        )
        ctx.log.info("order %s confirmed (rows updated: %d)", payload["order_id"], updated)
        return {"order_id": payload["order_id"], "status": "confirmed"}
    finally:
        close_old_connections()  # what Django does after each request; workers live long
