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
from conveyor.limits import ChannelLimits, Limit, Rate
from conveyor.models import (
    Batch,
    ChannelInfo,
    CronSchedule,
    CronSpec,
    Event,
    Job,
    JobSpec,
    JobState,
    LogRecord,
    PauseState,
    ThroughputPoint,
    Token,
    TokenResult,
    WorkerInfo,
)
from conveyor.queue import Queue
from conveyor.retry import Backoff, Fatal, Retry, Snooze
from conveyor.scheduling import next_tick
from conveyor.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Backoff",
    "Batch",
    "ChannelInfo",
    "ChannelLimits",
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
    "Limit",
    "LogRecord",
    "PauseState",
    "PayloadError",
    "Queue",
    "QueueDormant",
    "Rate",
    "Retry",
    "Rule",
    "Snooze",
    "ThroughputPoint",
    "Token",
    "TokenResult",
    "UnsupportedError",
    "ValidationError",
    "Worker",
    "WorkerDisabled",
    "WorkerInfo",
    "next_tick",
]
