"""Priority: lower runs first; equal priority runs in run_at, then enqueue order."""

from __future__ import annotations

import conveyor
from conveyor import JobSpec
from conveyor.testing import ManualClock


async def _recorder(queue: conveyor.Queue) -> list[object]:
    order: list[object] = []

    @queue.job("rec")
    async def rec(payload: object, ctx: conveyor.Context) -> None:
        order.append(payload)

    return order


async def test_lower_priority_number_runs_first(cq: conveyor.Queue) -> None:
    order = await _recorder(cq)
    for label, priority in [
        ("p5", 5),
        ("p-1", -1),
        ("p0", 0),
        ("p32767", 32767),
        ("p-32768", -32768),
        ("p1", 1),
    ]:
        await cq.enqueue("rec", label, priority=priority)
    assert await cq.worker(concurrency=1).run_once() == 6
    assert order == ["p-32768", "p-1", "p0", "p1", "p5", "p32767"]


async def test_equal_priority_runs_in_enqueue_order(cq: conveyor.Queue) -> None:
    order = await _recorder(cq)
    await cq.enqueue_many([JobSpec("rec", i) for i in range(10)])
    for i in range(10, 15):
        await cq.enqueue("rec", i)
    assert await cq.worker(concurrency=1).run_once() == 15
    assert order == list(range(15))


async def test_equal_priority_runs_in_run_at_order_before_enqueue_order(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    order = await _recorder(cq)
    await cq.enqueue("rec", "due-at-+30", delay=30)  # enqueued first, due last
    await cq.enqueue("rec", "due-at-+10", delay=10)
    await cq.enqueue("rec", "due-at-+20", delay=20)
    await cq.enqueue("rec", "high-due-at-+25", delay=25, priority=-1)
    clock.advance(60)
    await cq.enqueue("rec", "due-at-+60")  # due now, enqueued last
    assert await cq.worker(concurrency=1).run_once() == 5
    assert order == ["high-due-at-+25", "due-at-+10", "due-at-+20", "due-at-+30", "due-at-+60"]


async def test_priority_from_the_definition_and_the_option(cq: conveyor.Queue) -> None:
    order: list[str] = []

    @cq.job("urgent", priority=-10)
    async def urgent(payload: str, ctx: conveyor.Context) -> None:
        order.append(payload)

    @cq.job("lazy", priority=10)
    async def lazy(payload: str, ctx: conveyor.Context) -> None:
        order.append(payload)

    await lazy.enqueue("lazy")
    await lazy.enqueue("lazy-made-urgent", priority=-20)
    await urgent.enqueue("urgent")
    assert await cq.worker(concurrency=1).run_once() == 3
    assert order == ["lazy-made-urgent", "urgent", "lazy"]


async def test_priority_holds_across_channels(cq: conveyor.Queue) -> None:
    order = await _recorder(cq)
    await cq.enqueue("rec", "b-low", channel="b", priority=3)
    await cq.enqueue("rec", "a-low", channel="a", priority=2)
    await cq.enqueue("rec", "b-high", channel="b", priority=1)
    assert await cq.worker(concurrency=1).run_once() == 3
    assert order == ["b-high", "a-low", "b-low"]
