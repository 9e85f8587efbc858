"""The worker and its services (fetcher, executor, completer, heartbeat, maintenance)."""

from conveyor.worker.worker import Worker

__all__ = ["Worker"]
