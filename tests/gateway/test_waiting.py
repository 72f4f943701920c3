"""A bounded wait in a loop ends when its task is cancelled, even in the pass of the loop
where the event is set (``asyncio.wait_for`` on Python 3.11 loses that cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.waiting import wait_event


async def waiter(event: asyncio.Event, woken: list[int]) -> None:
    while True:
        event.clear()
        woken.append(int(await wait_event(event, 1.0)))


async def test_a_cancellation_arriving_with_the_event_ends_the_loop() -> None:
    event = asyncio.Event()
    woken: list[int] = []
    task = asyncio.create_task(waiter(event, woken))
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3.0)
    assert done == {task} and task.cancelled()
    assert woken == []


@pytest.mark.parametrize(("set_after", "expected"), [(None, False), (0.0, True), (0.01, True)])
async def test_returns_whether_the_event_was_set(set_after: float | None, expected: bool) -> None:
    event = asyncio.Event()
    if set_after == 0.0:
        event.set()
    elif set_after is not None:
        asyncio.get_running_loop().call_later(set_after, event.set)
    assert await wait_event(event, 0.05) is expected
