"""conveyor: durable background jobs on SQLite, PostgreSQL or Redis.

import conveyor

queue = conveyor.Queue()                      # CONVEYOR_URL or sqlite:///conveyor.db

@queue.job("send-welcome", attempts=5)
async def send_welcome(payload, ctx):
    ...

await send_welcome.enqueue({"email": "a@b.c"})
await queue.worker(concurrency=20).run()
"""

from conveyor.bus import EventBus, Rule
from conveyor.context import Context
from conveyor.definitions import JobDefinition
from conveyor.errors import (
    BackendError,
    ConveyorError,
    InvalidStateError,
    PayloadError,
    QueueDormant,
    UnsupportedError,
    ValidationError,
    WorkerDisabled,
)
from conveyor.models import (
    CronSchedule,
    CronSpec,
    Event,
    Job,
    JobSpec,
    JobState,
    LogRecord,
    Token,
    TokenResult,
)
from conveyor.queue import Queue
from conveyor.retry import Backoff, Fatal, Retry, Snooze
from conveyor.scheduling import next_tick
from conveyor.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Backoff",
    "Context",
    "ConveyorError",
    "CronSchedule",
    "CronSpec",
    "Event",
    "EventBus",
    "Fatal",
    "InvalidStateError",
    "Job",
    "JobDefinition",
    "JobSpec",
    "JobState",
    "LogRecord",
    "PayloadError",
    "Queue",
    "QueueDormant",
    "Retry",
    "Rule",
    "Snooze",
    "Token",
    "TokenResult",
    "UnsupportedError",
    "ValidationError",
    "Worker",
    "WorkerDisabled",
    "next_tick",
]
