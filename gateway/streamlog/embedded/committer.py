"""Group commit: concurrent produce calls share one SQLite transaction.

Producers append to a bounded in-memory queue and wait on a future (or a callback). At
most ``MAX_IN_FLIGHT`` commits are in flight: everything that arrived while they were
committing goes into the next one, so a lone record is committed at once and a crowd is
committed together. The transaction (``transaction.commit``) runs in the commit process
or the writer thread, as one call; both run commits one after another, in the order they
were sent. A producer is answered only after ``COMMIT`` returned, which is when the record
is durable.

Why two: with one, the writer sat idle from the end of each commit until the event loop
had read its outcome and sent the next, which under load is a whole pass of the loop over
every busy connection (milliseconds). With a second commit waiting behind the first, the
writer goes straight on; records still gather into large commits while both are busy.

Queue policy: at most ``queue_limit`` records wait; a producer finding the queue full waits
for room (backpressure), it is never dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import structlog

from gateway.errors import Unavailable
from gateway.streamlog.embedded.transaction import Placed, Work
from gateway.streamlog.interface import Produced

logger = structlog.get_logger(__name__)

Done = Callable[[Produced | BaseException], None]
"""Called with the position of a single record, or the exception that failed it."""

Outcome: TypeAlias = list[list[Produced]] | Exception
"""What a commit gives: each call's positions, or why it failed."""

Commit = Callable[[Work, Callable[[Outcome], None]], None]
"""Start one commit of ``Work``; its outcome goes to the callback, on the event loop.
Commits run, and are answered, in the order they were started."""

MAX_IN_FLIGHT = 2
"""Commits sent to the writer and not answered yet."""


class Pending:
    """What one commit entry answers: a produce call (several records when it is a batch)
    waiting on its future, or a run of single records queued one after another for the
    same topic, each with its ``Done`` callback.

    A run is one entry of the commit's ``Work`` however many records it holds, so a crowd
    of single publishes costs the commit one entry and one list of positions, not one of
    each per record.
    """

    __slots__ = ("dones", "future", "records", "topic_id")

    def __init__(
        self,
        topic_id: int,
        records: list[Placed],
        future: asyncio.Future[list[Produced]] | None,
        dones: list[Done] | None = None,
    ) -> None:
        self.topic_id = topic_id
        self.records = records
        self.future = future
        self.dones = dones

    def answer(self, result: list[Produced] | BaseException) -> None:
        dones = self.dones
        if dones is not None:
            outcomes: Sequence[Produced | BaseException] = (
                [result] * len(dones) if isinstance(result, BaseException) else result
            )
            for done, outcome in zip(dones, outcomes, strict=True):
                try:
                    done(outcome)
                except Exception:
                    logger.exception("produce_callback_failed")
        elif self.future is not None and not self.future.done():
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)


class GroupCommitter:
    """Drives the queue: at most ``max_in_flight`` commits in flight, the next one sent
    the moment there is room for it.

    It runs on callbacks, not in a task: a commit's outcome answers its producers and sends
    what queued up meanwhile in the same pass of the event loop, where a task would add a
    pass (a wake-up) at each step.
    """

    def __init__(
        self,
        commit: Commit,
        on_commit: Callable[[set[int]], None],
        *,
        queue_limit: int,
        max_records: int,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._commit = commit
        self._max_in_flight = max_in_flight
        self._on_commit = on_commit
        self._queue_limit = queue_limit
        self._max_records = max_records
        self._queue: list[Pending] = []
        self._queued_records = 0
        self._in_flight: deque[list[Pending]] = deque()
        self._send_scheduled = False
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.commits = 0
        """Commits done (answered with positions) since the committer started."""
        self.committed_records = 0
        """Records those commits wrote or found already written (duplicates)."""

    @property
    def queued_records(self) -> int:
        return self._queued_records

    @property
    def in_flight(self) -> int:
        """Commits sent and not answered yet."""
        return len(self._in_flight)

    async def submit(self, topic_id: int, records: list[Placed]) -> Awaitable[list[Produced]]:
        """Queue records; await the result for their positions."""
        while self._queued_records + len(records) > self._queue_limit and self._queued_records:
            if self._closing:
                break
            self._room.clear()
            await self._room.wait()
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        future: asyncio.Future[list[Produced]] = asyncio.get_running_loop().create_future()
        self._enqueue(Pending(topic_id, records, future))
        return future

    def submit_nowait(
        self, topic_id: int, records: list[Placed]
    ) -> asyncio.Future[list[Produced]] | None:
        """Queue records if there is room now; None when the caller must wait (``submit``)."""
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        if self._queued_records and self._queued_records + len(records) > self._queue_limit:
            return None
        future: asyncio.Future[list[Produced]] = asyncio.get_running_loop().create_future()
        self._enqueue(Pending(topic_id, records, future))
        return future

    def submit_soon(self, topic_id: int, record: Placed, done: Done) -> bool:
        """Queue one record whose outcome goes to ``done``; False when the queue is full
        (the caller must wait for room with ``submit``)."""
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        queued = self._queued_records
        if queued and queued + 1 > self._queue_limit:
            return False
        queue = self._queue
        if queue:
            last = queue[-1]
            dones = last.dones
            # Joins the run queued last when it is one for the same topic with room.
            if dones is not None and last.topic_id == topic_id and len(dones) < self._max_records:
                last.records.append(record)
                dones.append(done)
                self._queued_records = queued + 1
                return True
        self._enqueue(Pending(topic_id, [record], None, [done]))
        return True

    async def close(self) -> None:
        """Commit what is queued, answer every waiting producer, then stop."""
        self._closing = True
        self._room.set()
        await self._idle.wait()

    def _enqueue(self, pending: Pending) -> None:
        self._queue.append(pending)
        self._queued_records += len(pending.records)
        if not self._send_scheduled and len(self._in_flight) < self._max_in_flight:
            # Sent at the next pass of the loop, with whatever else this pass queues.
            self._idle.clear()
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._send_scheduled = False
        # More than one commit starts here when more than ``max_records`` records wait.
        while self._queue and len(self._in_flight) < self._max_in_flight:
            batch = self._take()
            self._in_flight.append(batch)
            if self._queued_records < self._queue_limit:
                self._room.set()
            try:
                self._commit([(p.topic_id, p.records) for p in batch], self._committed)
            except Exception as exc:
                # Not started: this batch (the newest in flight) fails alone.
                self._in_flight.pop()
                self._answer(batch, exc)
        if not self._queue and not self._in_flight:
            self._idle.set()

    def _committed(self, outcome: Outcome) -> None:
        batch = self._in_flight.popleft()
        # What queued up meanwhile is sent before this commit's producers are answered, so
        # that answering (acks, fan-out wake-ups) and the next commit overlap.
        self._send()
        self._answer(batch, outcome)

    def _take(self) -> list[Pending]:
        """The oldest waiting calls, up to ``max_records`` records (at least one call)."""
        queue = self._queue
        count = cut = 0
        for pending in queue:
            size = len(pending.records)
            if cut and count + size > self._max_records:
                break
            count += size
            cut += 1
        batch = queue[:cut]
        del queue[:cut]
        self._queued_records -= count
        return batch

    def _answer(self, batch: list[Pending], outcome: Outcome) -> None:
        if isinstance(outcome, Exception):
            error = (
                outcome
                if isinstance(outcome, Unavailable)
                else Unavailable(f"The stream log could not commit: {outcome}. Retry shortly.")
            )
            for pending in batch:
                pending.answer(error)
            return
        self.commits += 1
        topic_ids = set()
        for pending, result in zip(batch, outcome, strict=True):
            topic_ids.add(pending.topic_id)
            self.committed_records += len(result)
            pending.answer(result)
        self._on_commit(topic_ids)
