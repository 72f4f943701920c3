"""Consumer progress: which offset of each partition is safe to commit.

Records are handed out in offset order per partition, but the agents finish them in any
order. A record is *pending* until every item made from it is durable: applied by its
agent, deferred, rejected or found to need no memory. The committed offset of a
partition (its *watermark*) is the lowest pending offset, or the next offset to read
when nothing is pending: everything below it is durable, so a restart from it loses
nothing, and anything at or above it that was applied already is recognized by the
``applied`` table and not applied again.

Looking a batch up in ``applied`` costs a query, so it is done only where it can find
something: below each partition's *recheck horizon*, one past the highest offset that
was applied or deferred when the pipeline started. Records above it were never applied
before this run, and this run reads each record once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from agents.work import Source
from gateway.streamlog.interface import Record


class _Partition:
    __slots__ = ("next_offset", "order", "pending", "saved")

    def __init__(self, offset: int) -> None:
        self.next_offset = offset
        self.saved = offset
        self.pending: dict[int, int] = {}
        self.order: deque[int] = deque()

    @property
    def watermark(self) -> int:
        order, pending = self.order, self.pending
        while order and order[0] not in pending:
            order.popleft()
        return order[0] if order else self.next_offset


class Progress:
    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], _Partition] = {}
        self.horizon: dict[tuple[str, int], int] = {}
        """Per partition: offsets below it may have been applied before this run."""

    def may_be_applied(self, source: Source) -> bool:
        """Whether ``source`` must be looked up in ``applied`` before it is applied."""
        return source.offset < self.horizon.get((source.topic, source.partition), 0)

    def start(self, topic: str, partition: int, offset: int) -> None:
        """Where a partition starts (its committed offset)."""
        self._parts[(topic, partition)] = _Partition(offset)

    def _part(self, topic: str, partition: int) -> _Partition:
        part = self._parts.get((topic, partition))
        if part is None:
            # A partition never committed and not known at start: it starts where it is read.
            part = self._parts[(topic, partition)] = _Partition(0)
        return part

    def begin(self, records: Sequence[Record]) -> None:
        """Records handed to the dispatcher: pending until ``settle``."""
        for record in records:
            part = self._part(record.topic, record.partition)
            part.pending[record.offset] = 1
            part.order.append(record.offset)
            part.next_offset = record.offset + 1

    def settle(self, topic: str, partition: int, offset: int, queued: int) -> None:
        """The dispatch transaction committed: the record now waits for ``queued`` items
        in agent queues (0: it is done)."""
        part = self._part(topic, partition)
        if queued:
            part.pending[offset] = queued
        else:
            part.pending.pop(offset, None)

    def complete(self, sources: Iterable[Source]) -> None:
        """Items applied (inside the transaction that applied them)."""
        for source in sources:
            part = self._parts.get((source.topic, source.partition))
            if part is None:
                continue
            left = part.pending.get(source.offset)
            if left is None:
                continue
            if left <= 1:
                del part.pending[source.offset]
            else:
                part.pending[source.offset] = left - 1

    def preview(self, sources: Iterable[Source]) -> dict[tuple[str, int], int]:
        """The watermarks of the partitions of ``sources`` as they will be once these are
        complete, changing nothing: what a transaction applying them in another process
        saves with them. Other items completing meanwhile only raise the real ones."""
        completing: dict[tuple[str, int], dict[int, int]] = {}
        for source in sources:
            key = (source.topic, source.partition)
            counts = completing.setdefault(key, {})
            counts[source.offset] = counts.get(source.offset, 0) + 1
        marks = {}
        for key, counts in completing.items():
            part = self._parts.get(key)
            if part is None:
                continue
            pending = part.pending
            mark = part.next_offset
            for offset in part.order:
                left = pending.get(offset)
                if left is not None and left > counts.get(offset, 0):
                    mark = offset
                    break
            if mark != part.saved:
                marks[key] = mark
        return marks

    def saved(self, marks: dict[tuple[str, int], int]) -> None:
        """``marks`` (from ``preview``) were committed."""
        for key, mark in marks.items():
            part = self._parts.get(key)
            if part is not None and mark > part.saved:
                part.saved = mark

    def changed(self) -> dict[tuple[str, int], int]:
        """Watermarks that moved since the last call, to write in the current transaction."""
        moved = {}
        for key, part in self._parts.items():
            mark = part.watermark
            if mark != part.saved:
                moved[key] = mark
                part.saved = mark
        return moved

    def watermarks(self) -> dict[tuple[str, int], int]:
        return {key: part.watermark for key, part in self._parts.items()}

    def pending(self) -> int:
        return sum(len(part.pending) for part in self._parts.values())
