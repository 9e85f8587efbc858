"""Testing your own code with ``conveyor.testing``: no server, no sleeps.

    python examples/testing_example.py

The "application" below signs a user up: it enqueues a welcome mail now and a follow-up
mail in three days. The tests use the real engine on ``sqlite:///:memory:``
(``inline_queue``), check what was enqueued (``assert_enqueued``), run it in-process
(``drain``) and move time with a ``ManualClock`` instead of waiting three days.

With pytest (and pytest-asyncio) the ``test_*`` coroutines work as they are; here
``main()`` runs them so the file is self-contained.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import conveyor
from conveyor.testing import ManualClock, assert_enqueued, drain, inline_queue

# -- the application ---------------------------------------------------------------------
SENT: list[tuple[str, str]] = []  # stands in for an email API


def register_jobs(queue: conveyor.Queue) -> None:
    @queue.job("send-mail", attempts=3)
    async def send_mail(payload: dict, ctx: conveyor.Context) -> dict:
        SENT.append((payload["template"], payload["to"]))
        return {"sent": True}


async def sign_up(queue: conveyor.Queue, email: str, tenant: str) -> int:
    """What a request handler would do: enqueue and return at once."""
    await queue.enqueue(
        "send-mail",
        {"template": "follow-up", "to": email},
        delay=timedelta(days=3),
        tenant=tenant,
    )
    return await queue.enqueue(
        "send-mail",
        {"template": "welcome", "to": email},
        tenant=tenant,
        idempotency_key=f"welcome:{email}",  # a double-submitted form sends one mail
    )


# -- the tests ---------------------------------------------------------------------------
def new_queue() -> tuple[conveyor.Queue, ManualClock]:
    clock = ManualClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    queue = inline_queue(clock=clock)
    register_jobs(queue)
    return queue, clock


async def test_sign_up_enqueues_a_welcome_mail_once() -> None:
    queue, _ = new_queue()
    first = await sign_up(queue, "ada@example.com", tenant="acme")
    second = await sign_up(queue, "ada@example.com", tenant="acme")
    assert first == second  # same idempotency key, same job

    (job,) = await assert_enqueued(
        queue, "send-mail", payload={"template": "welcome", "to": "ada@example.com"},
        state="queued", tenant="acme",
    )  # fmt: skip
    assert job.max_attempts == 3  # the definition's default
    await queue.close()


async def test_mails_are_sent_now_and_three_days_later() -> None:
    queue, clock = new_queue()
    SENT.clear()
    await sign_up(queue, "bob@example.com", tenant="acme")

    assert await drain(queue) == 1  # only the welcome mail is due
    assert SENT == [("welcome", "bob@example.com")]
    await assert_enqueued(queue, "send-mail", state="scheduled", count=1)  # the follow-up

    clock.advance(timedelta(days=3))  # no sleeping: move the queue's clock
    assert await drain(queue) == 1
    assert SENT[-1] == ("follow-up", "bob@example.com")
    # drain() runs a maintenance pass first, and retention follows the clock too: the
    # welcome job finished three (manual) days ago, past keep_completed (1 day), so it
    # was deleted; only the follow-up is left.
    assert (await queue.counts())["completed"] == 1
    await queue.close()


async def main() -> None:
    for test in (
        test_sign_up_enqueues_a_welcome_mail_once,
        test_mails_are_sent_now_and_three_days_later,
    ):
        await test()
        print(f"ok  {test.__name__}")
    print("all tests passed")


if __name__ == "__main__":
    asyncio.run(main())
