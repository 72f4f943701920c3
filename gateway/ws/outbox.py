"""A session's bounded send queue, drained by one writer task.

Replies (acks, errors, pongs) are always queued: they are bounded by the session's limit on
publishes in flight. Replies queued while the queue is idle are sent by one callback in the
loop's next pass, all in one ``direct`` call, rather than by waking the writer task: the
acks of one commit reach a session together, and a scheduled call is cheaper than a task
wake-up (an event set, a future, a task step). When ``direct`` refuses (the socket pushes
back), the writer takes them as before.

Deliveries are queued only while the queue is under its frame and byte bounds; ``offer``
returning False tells the subscription to pause and catch up from the log later, so a slow
client never makes fan-out wait and never loses a record. The writer hands every queued
frame to one ``write`` call, so frames that are ready together go out together, and a lone
frame goes out at once. Frames being written still count against the bounds until the
write returns.

A delivery offered to an empty queue, with no write in progress, may skip the queue and the
writer task: ``direct`` sends it at once when the connection can take it (at most
``DIRECT_BYTES_PER_PASS`` bytes per pass of the event loop, see ``Session._direct``).
Fan-out hands each session a few frames per batch of records, and waking a writer task per
session cost more than the frames themselves; the bound keeps what a peer that does not
read can be handed outside the queue small and fixed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

Write = Callable[[list[bytes]], Awaitable[None]]
"""Sends frames in order; waits while the peer is not reading; raises once it is gone."""

Direct = Callable[[list[bytes]], bool]
"""Sends the frames now if the connection can take them without waiting; False (nothing
sent) otherwise."""


class Outbox:
    def __init__(
        self,
        write: Write,
        *,
        max_frames: int,
        max_bytes: int,
        direct: Direct | None = None,
    ) -> None:
        self._write = write
        self._direct = direct
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._full_since: float | None = None
        self._closed = False
        self._in_write = 0
        self._send_scheduled = False
        self.sent_frames = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        return len(self._frames)

    @property
    def full_for(self) -> float:
        """Seconds the queue has been refusing deliveries (0 when it has room)."""
        return 0.0 if self._full_since is None else time.monotonic() - self._full_since

    def has_room(self) -> bool:
        return len(self._frames) < self._max_frames and self._bytes < self._max_bytes

    def put(self, frame: bytes) -> None:
        """Queue a reply; never refused."""
        if self._closed:
            return
        frames = self._frames
        if not frames:
            # Behind queued frames a send is scheduled, or the writer is awake already.
            if self._direct is not None and not self._in_write:
                if not self._send_scheduled:
                    self._send_scheduled = True
                    asyncio.get_running_loop().call_soon(self._send_replies)
            else:
                self._ready.set()
        frames.append(frame)
        self._bytes += len(frame)

    def _send_replies(self) -> None:
        """The end of a pass in which replies were queued to an idle queue: send what is
        queued in one ``direct`` call, or leave it to the writer."""
        self._send_scheduled = False
        frames = self._frames
        if not frames or self._in_write or self._closed:
            # The writer took them (a delivery queued behind them woke it), or will.
            return
        batch = list(frames)
        assert self._direct is not None
        if self._direct(batch):
            frames.clear()
            self._bytes -= sum(map(len, batch))
            self.sent_frames += len(batch)
        else:
            self._ready.set()

    def offer(self, frame: bytes) -> bool:
        """Queue a delivery if there is room; False (and nothing queued) otherwise."""
        if self._closed:
            return False
        if not self.has_room():
            if self._full_since is None:
                self._full_since = time.monotonic()
            self._room.clear()
            return False
        # Order holds: nothing is queued or being written ahead of this frame.
        direct = self._direct
        if direct is not None and not self._frames and not self._in_write and direct([frame]):
            self.sent_frames += 1
            return True
        self._frames.append(frame)
        self._bytes += len(frame)
        self._ready.set()
        return True

    def offer_all(self, frames: list[bytes]) -> bool:
        """Queue (or send) every delivery of ``frames`` if there is room for them all;
        False, with nothing queued, otherwise (then ``offer`` them one by one)."""
        if self._closed:
            return False
        direct = self._direct
        if direct is not None and not self._frames and not self._in_write and direct(frames):
            self.sent_frames += len(frames)
            return True
        size = sum(map(len, frames))
        if (
            len(self._frames) + len(frames) > self._max_frames
            or self._bytes + size > self._max_bytes
        ):
            return False
        self._frames.extend(frames)
        self._bytes += size
        self._ready.set()
        return True

    async def wait_room(self) -> None:
        while not self.has_room() and not self._closed:
            if self._full_since is None:
                self._full_since = time.monotonic()
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        self._closed = True
        self._frames.clear()
        self._bytes = self._in_write
        self._ready.set()
        self._room.set()

    async def run(self) -> None:
        """The writer: send queued frames until ``close``; raises what sending raises."""
        frames = self._frames
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            while frames and not self._closed:
                batch = list(frames)
                frames.clear()
                size = sum(map(len, batch))
                # The batch counts against the byte bound until it is written.
                self._in_write = size
                try:
                    await self._write(batch)
                finally:
                    self._in_write = 0
                    self._bytes -= size
                self.sent_frames += len(batch)
                if not self._room.is_set() and self.has_room():
                    self._full_since = None
                    self._room.set()
            if self.has_room():
                self._full_since = None
                self._room.set()

    async def flush(self, timeout: float) -> None:
        """Wait until everything queued so far has been sent (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self._frames and not self._closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
