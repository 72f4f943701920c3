"""Following a topic of the embedded log: replay from stored records, then live.

A tail first takes a snapshot: the next offset of each partition and the highest record id
committed. It replays each partition by offset up to that id, then follows the topic by id
from there. Every record committed after the snapshot has a larger id, and every record is
checked against the partition's next offset, so nothing is missed or seen twice at the
switch-over. Waiting is event driven: the log wakes tails on commit (and its watcher wakes
them when another process commits), so an idle tail costs no queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from gateway.streamlog.interface import Record, StartPosition, Tail
from gateway.streamlog.positions import check_partition, resolve_start
from gateway.waiting import wait_event

if TYPE_CHECKING:
    from gateway.streamlog.embedded.log import EmbeddedLog

_REPLAY = (
    'SELECT partition, "offset", timestamp, key, value, headers FROM records '
    'WHERE topic_id = ? AND partition = ? AND "offset" >= ? AND id <= ? '
    'ORDER BY "offset" LIMIT ?'
)
_LIVE = (
    'SELECT id, partition, "offset", timestamp, key, value, headers FROM records '
    "WHERE topic_id = ? AND id > ? ORDER BY id LIMIT ?"
)


class EmbeddedTail(Tail):
    def __init__(
        self,
        log: EmbeddedLog,
        topic: str,
        partitions: Sequence[int] | None,
        start: StartPosition,
        max_batch: int,
    ) -> None:
        spec = log.topic(topic)
        chosen = list(range(spec.partitions)) if partitions is None else sorted(set(partitions))
        for partition in chosen:
            check_partition(spec, partition)
        self._log = log
        self._topic = topic
        self._topic_id = log.topic_id(topic)
        self._partitions = chosen
        self._start = start
        self._max_batch = max_batch
        self._next: dict[int, int] = {}
        self._snapshot_id = 0
        self._started = False
        self._closed = False
        self._iterator: AsyncIterator[list[Record]] | None = None

    @property
    def positions(self) -> dict[int, int]:
        return dict(self._next)

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def start(self) -> dict[int, int]:
        """Resolve the start position now (``positions`` is then known); returns it."""
        if not self._started:
            self._snapshot_id = await self._resolve_start()
            self._started = True
        return self.positions

    async def aclose(self) -> None:
        self._closed = True
        self._log.wake(self._topic_id)

    async def _resolve_start(self) -> int:
        states, snapshot_id = await self._log.snapshot(self._topic_id)
        spec = self._log.topic(self._topic)
        self._next = resolve_start(spec, self._start, self._partitions, states)
        return snapshot_id

    async def _run(self) -> AsyncIterator[list[Record]]:
        try:
            async for batch in self._batches():
                yield batch
        except ValueError:
            # aiosqlite's "no active connection": the log closed under a waiting tail.
            if not self._log.closed:
                raise

    async def _batches(self) -> AsyncIterator[list[Record]]:
        await self.start()
        log, topic, topic_id = self._log, self._topic, self._topic_id
        limit = self._max_batch
        cursor = self._snapshot_id
        for partition in self._partitions:
            while not self._closed:
                rows = await log.query(
                    _REPLAY, (topic_id, partition, self._next[partition], cursor, limit)
                )
                if not rows:
                    break
                batch = [log.row_to_record(topic, row) for row in rows]
                self._next[partition] = batch[-1].offset + 1
                yield batch
                if len(rows) < limit:
                    break
        wanted = self._next
        while not self._closed and not log.closed:
            wake = log.wake_event(topic_id)
            rows = await log.query(_LIVE, (topic_id, cursor, limit))
            if rows:
                cursor = rows[-1][0]
                batch = []
                for row in rows:
                    partition, offset = row[1], row[2]
                    expected = wanted.get(partition)
                    if expected is None or offset < expected:
                        continue
                    wanted[partition] = offset + 1
                    batch.append(log.row_to_record(topic, row[1:]))
                if batch:
                    yield batch
                if len(rows) == limit:
                    continue
            if self._closed or log.closed:
                break
            await wait_event(wake, log.idle_recheck_s)
