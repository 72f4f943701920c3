"""Bounded waits that never swallow a cancellation.

On Python 3.11, ``asyncio.wait_for`` runs the awaited coroutine as a task of its own. When
the waiting task is cancelled in the same pass of the loop as that inner task finishes
(an event set just as a worker is stopped), ``wait_for`` returns the inner result and the
cancellation is lost: a loop around it then runs forever and whoever awaits the cancelled
task hangs. ``asyncio.timeout`` cancels the waiting task itself, so a cancellation always
arrives; every bounded wait in a loop goes through here.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; return whether it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
