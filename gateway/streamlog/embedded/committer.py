"""Group commit: concurrent produce calls share one SQLite transaction.

Producers append to a bounded in-memory queue and wait on a future. One task drains the
queue: everything that arrived while the previous transaction was committing goes into the
next one, so a lone record is committed at once and a crowd is committed together. A
future is answered only after ``COMMIT`` returned, which is when the record is durable.

Queue policy: at most ``queue_limit`` records wait; a producer finding the queue full waits
for room (backpressure), it is never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import aiosqlite
import msgspec

from gateway.errors import Unavailable
from gateway.streamlog.interface import Headers, Produced

_headers_encoder = msgspec.msgpack.Encoder()

INSERT_RECORD = (
    'INSERT INTO records (topic_id, partition, "offset", timestamp, key, value, headers) '
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_STATE = (
    "UPDATE partition_state SET next_offset = ?, last_timestamp = ?, bytes = bytes + ? "
    "WHERE topic_id = ? AND partition = ?"
)


Placed = tuple[int, bytes | None, bytes, Headers, str | None]
"""A record to write: (partition, key, value, headers, idempotency key)."""

INSERT_IDEMPOTENCY = (
    'INSERT OR REPLACE INTO idempotency (topic_id, key, partition, "offset", timestamp) '
    "VALUES (?, ?, ?, ?, ?)"
)


class PartitionCursors(Protocol):
    """Where the next record of each partition goes; owned by the log."""

    next_offset: dict[int, list[int]]
    last_timestamp: dict[int, list[int]]

    async def reload_if_changed(self, db: aiosqlite.Connection) -> None: ...

    async def reload(self, db: aiosqlite.Connection) -> None: ...


class Pending:
    """One produce call waiting for its commit (several records when it is a batch)."""

    __slots__ = ("future", "records", "topic_id")

    def __init__(
        self,
        topic_id: int,
        records: Sequence[Placed],
        future: asyncio.Future[list[Produced]],
    ) -> None:
        self.topic_id = topic_id
        self.records = records
        self.future = future


class GroupCommitter:
    def __init__(
        self,
        db: aiosqlite.Connection,
        cursors: PartitionCursors,
        write_lock: asyncio.Lock,
        on_commit: Callable[[set[int]], None],
        *,
        queue_limit: int,
        max_records: int,
    ) -> None:
        self._db = db
        self._cursors = cursors
        self._lock = write_lock
        self._on_commit = on_commit
        self._queue_limit = queue_limit
        self._max_records = max_records
        self._queue: list[Pending] = []
        self._queued_records = 0
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_records(self) -> int:
        return self._queued_records

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def submit(self, topic_id: int, records: Sequence[Placed]) -> Awaitable[list[Produced]]:
        """Queue records; await the result for their positions."""
        while self._queued_records + len(records) > self._queue_limit and self._queued_records:
            if self._closing:
                break
            self._room.clear()
            await self._room.wait()
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        future: asyncio.Future[list[Produced]] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(topic_id, records, future))
        self._queued_records += len(records)
        self._work.set()
        return future

    async def close(self) -> None:
        """Commit what is queued, answer every waiting producer, then stop."""
        self._closing = True
        self._room.set()
        self._work.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue:
                batch = self._take()
                await self._commit(batch)
                if self._queued_records < self._queue_limit:
                    self._room.set()
            if self._closing:
                return

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

    async def _commit(self, batch: list[Pending]) -> None:
        db = self._db
        cursors = self._cursors
        try:
            async with self._lock:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await cursors.reload_if_changed(db)
                    seen = await _known_keys(db, batch)
                    rows, results, touched, keys = self._place(batch, seen)
                    await db.executemany(INSERT_RECORD, rows)
                    await db.executemany(UPDATE_STATE, touched)
                    if keys:
                        await db.executemany(INSERT_IDEMPOTENCY, keys)
                    await db.execute("COMMIT")
                except BaseException:
                    await _rollback(db)
                    await cursors.reload(db)
                    raise
        except Exception as exc:
            error = Unavailable(f"The stream log could not commit: {exc}. Retry shortly.")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
        self._on_commit({p.topic_id for p in batch})

    def _place(
        self, batch: list[Pending], seen: dict[tuple[int, str], Produced]
    ) -> tuple[
        list[tuple[object, ...]],
        list[list[Produced]],
        list[tuple[int, int, int, int, int]],
        list[tuple[int, str, int, int, int]],
    ]:
        """Give each new record its offset and timestamp (advancing the cursors); a record
        whose idempotency key is in ``seen`` (or earlier in the batch) gets the original."""
        now = int(time.time() * 1000)
        next_offset = self._cursors.next_offset
        last_ts = self._cursors.last_timestamp
        rows: list[tuple[object, ...]] = []
        results: list[list[Produced]] = []
        sizes: dict[tuple[int, int], int] = {}
        keys: list[tuple[int, str, int, int, int]] = []
        for pending in batch:
            topic_id = pending.topic_id
            offsets = next_offset[topic_id]
            stamps = last_ts[topic_id]
            produced: list[Produced] = []
            for partition, key, value, headers, idempotency_key in pending.records:
                if idempotency_key is not None:
                    original = seen.get((topic_id, idempotency_key))
                    if original is not None:
                        produced.append(original)
                        continue
                offset = offsets[partition]
                offsets[partition] = offset + 1
                # Timestamps never go back within a partition, which retention relies on.
                ts = stamps[partition]
                if now > ts:
                    ts = stamps[partition] = now
                blob = _headers_encoder.encode(headers) if headers else None
                rows.append((topic_id, partition, offset, ts, key, value, blob))
                produced.append(Produced(partition, offset, ts))
                if idempotency_key is not None:
                    keys.append((topic_id, idempotency_key, partition, offset, ts))
                    seen[(topic_id, idempotency_key)] = Produced(partition, offset, ts, True)
                where = (topic_id, partition)
                sizes[where] = sizes.get(where, 0) + len(value) + (len(key) if key else 0)
            results.append(produced)
        touched = [(next_offset[t][p], last_ts[t][p], size, t, p) for (t, p), size in sizes.items()]
        return rows, results, touched, keys


async def _known_keys(
    db: aiosqlite.Connection, batch: list[Pending]
) -> dict[tuple[int, str], Produced]:
    """Positions of idempotency keys of ``batch`` that were already written."""
    wanted: dict[int, list[str]] = {}
    for pending in batch:
        for record in pending.records:
            if record[4] is not None:
                wanted.setdefault(pending.topic_id, []).append(record[4])
    found: dict[tuple[int, str], Produced] = {}
    for topic_id, keys in wanted.items():
        # `topic_id = ? AND key IN (...)` is answered from the primary key index.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = await db.execute_fetchall(
                'SELECT key, partition, "offset", timestamp FROM idempotency '
                f"WHERE topic_id = ? AND key IN ({','.join('?' * len(chunk))})",
                [topic_id, *chunk],
            )
            for key, partition, offset, ts in rows:
                found[(topic_id, key)] = Produced(partition, offset, ts, True)
    return found


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except Exception:
        pass
