"""Placing an order: the row and its job commit together, or neither exists."""

from django.db import connection, transaction

from orders.jobs import queue
from orders.models import Order


class PaymentDeclined(Exception):
    """Raised inside the transaction: the order and its job are rolled back."""


def place_order(item: str, *, fail: bool = False) -> tuple[int, int]:
    """The order row and its ``confirm-order`` job in one transaction, on Django's own
    psycopg connection: a rollback leaves neither, and no worker sees the job before the
    commit. Returns (order id, job id)."""
    with transaction.atomic():
        order = Order.objects.create(item=item)
        job_id = queue.enqueue_sync(
            "confirm-order",
            {"order_id": order.pk},
            connection=connection.connection,  # the psycopg.Connection inside atomic()
        )
        if fail:
            raise PaymentDeclined("card declined")
    return order.pk, job_id


def place_order_on_commit(item: str, *, fail: bool = False) -> tuple[int, list[int]]:
    """The alternative: enqueue after the commit (any backend, Redis included). A rollback
    enqueues nothing; but a crash between the commit and the enqueue loses the job.
    Returns (order id, the job ids enqueued at commit)."""
    job_ids: list[int] = []
    with transaction.atomic():
        order = Order.objects.create(item=item)
        transaction.on_commit(
            lambda: job_ids.append(queue.enqueue_sync("confirm-order", {"order_id": order.pk}))
        )
        if fail:
            raise PaymentDeclined("card declined")
    return order.pk, job_ids
