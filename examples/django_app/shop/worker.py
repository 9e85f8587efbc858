"""The worker's entry point: Django is set up before the jobs (and their models) load.

conveyor worker shop.worker:queue            # from examples/django_app
conveyor --app shop.worker:queue migrate     # create conveyor's schema once
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()

from orders.jobs import queue  # noqa: E402  (needs django.setup() first)

__all__ = ["queue"]
