"""The exception tree. Every error conveyor raises is a :class:`ConveyorError`.

::

    ConveyorError
    ├── ValidationError      bad options, names, cron expressions, naive datetimes
    │   └── PayloadError     payload not JSON-serialisable or over max_payload_bytes
    ├── BackendError         the store is unreachable or failed
    ├── InvalidStateError    the job is not in a state that allows the operation
    ├── QueueDormant         no CONVEYOR_URL configured for a dormant queue
    ├── WorkerDisabled       CONVEYOR_WORKER=false forbids running a worker here
    └── UnsupportedError     the backend cannot honour an option (connection= on Redis)

Job control signals (:class:`conveyor.Retry`, :class:`conveyor.Fatal`) are not errors;
they live in :mod:`conveyor.retry`.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConveyorError",
    "InvalidStateError",
    "PayloadError",
    "QueueDormant",
    "UnsupportedError",
    "ValidationError",
    "WorkerDisabled",
]


class ConveyorError(Exception):
    """Root of every error conveyor raises."""


class ValidationError(ConveyorError, ValueError):
    """An option, name, cron expression or datetime is invalid; nothing was written."""


class PayloadError(ValidationError):
    """The payload is not JSON-serialisable or is larger than ``max_payload_bytes``."""


class BackendError(ConveyorError):
    """The store is unreachable or a storage operation failed.

    Attributes:
        transient: True (the default) when trying again later may succeed (a lost
            connection, a timeout, a busy store); False when the store refused the data
            itself, so the same write would fail again.
    """

    def __init__(self, message: str = "", *, transient: bool = True):
        super().__init__(message)
        self.transient = transient


class InvalidStateError(ConveyorError):
    """The job is not in a state that allows this operation."""


class QueueDormant(ConveyorError):
    """The queue has no ``CONVEYOR_URL``: it cannot enqueue or run workers."""


class WorkerDisabled(ConveyorError):
    """``CONVEYOR_WORKER=false``: this process only enqueues and serves status."""


class UnsupportedError(ConveyorError):
    """The backend cannot honour this option (for example ``connection=`` on Redis)."""
