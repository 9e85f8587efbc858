import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.services import PaymentDeclined, place_order, place_order_on_commit


class Command(BaseCommand):
    help = "Place an order: the row and its confirmation job commit together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("item")
        parser.add_argument(
            "--on-commit",
            action="store_true",
            help="enqueue in transaction.on_commit instead of inside the transaction",
        )
        parser.add_argument(
            "--fail", action="store_true", help="fail before the commit: everything rolls back"
        )

    def handle(self, *args: Any, item: str, on_commit: bool, fail: bool, **options: Any) -> None:
        try:
            if on_commit:
                order_id, job_ids = place_order_on_commit(item, fail=fail)
            else:
                order_id, job_id = place_order(item, fail=fail)
                job_ids = [job_id]
        except PaymentDeclined as exc:
            raise CommandError(f"order for {item!r} rolled back: {exc}") from None
        self.stdout.write(json.dumps({"order_id": order_id, "job_ids": job_ids}))
