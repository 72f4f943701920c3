"""Group commit: concurrent produce calls share one SQLite transaction.

Producers append to a bounded in-memory queue and wait on a future. One task drains the
queue: everything that arrived while the previous transaction was committing goes into the
next one, so a lone record is committed at once and a crowd is committed together. The
transaction runs as one call in the writer thread. A future is answered only after
``COMMIT`` returned, which is when the record is durable.

Queue policy: at most ``queue_limit`` records wait; a producer finding the queue full waits
for room (backpressure), it is never dropped.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec
import structlog

from gateway.errors import Unavailable
from gateway.streamlog.embedded.writer import Writer
from gateway.streamlog.interface import Headers, Produced

_headers_encoder = msgspec.msgpack.Encoder()

logger = structlog.get_logger(__name__)

Placed = tuple[int, bytes | None, bytes, Headers, str | None]
"""A record to write: (partition, key, value, headers, idempotency key)."""

ROWS_PER_STATEMENT = 200
"""Rows written by one multi-row INSERT: one SQLite step (and one GIL release) for many
rows, where ``executemany`` steps, and takes the GIL back, once per row."""

_INSERT_RECORDS = (
    'INSERT INTO records (topic_id, partition, "offset", timestamp, key, value, headers) VALUES {}'
)
_UPSERT_STATE = (
    "INSERT INTO partition_state (topic_id, partition, start_offset, next_offset, "
    "last_timestamp, bytes) VALUES {} ON CONFLICT (topic_id, partition) DO UPDATE SET "
    "next_offset = excluded.next_offset, last_timestamp = excluded.last_timestamp, "
    "bytes = partition_state.bytes + excluded.bytes"
)
_INSERT_IDEMPOTENCY = (
    'INSERT OR REPLACE INTO idempotency (topic_id, key, partition, "offset", timestamp) VALUES {}'
)
_INSERT_NEW_IDEMPOTENCY = (
    'INSERT OR IGNORE INTO idempotency (topic_id, key, partition, "offset", timestamp) VALUES {}'
)


class PartitionCursors(Protocol):
    """Where the next record of each partition goes; owned by the log, used in the writer
    thread only."""

    next_offset: dict[int, list[int]]
    last_timestamp: dict[int, list[int]]

    def reload_if_changed(self, db: sqlite3.Connection) -> None: ...

    def reload(self, db: sqlite3.Connection) -> None: ...


Done = Callable[[Produced | BaseException], None]
"""Called with the position of a single record, or the exception that failed it."""


class Pending:
    """One produce call waiting for its commit (several records when it is a batch): its
    future, or for a single record possibly a ``Done`` callback instead."""

    __slots__ = ("done", "future", "records", "topic_id")

    def __init__(
        self,
        topic_id: int,
        records: Sequence[Placed],
        future: asyncio.Future[list[Produced]] | None,
        done: Done | None = None,
    ) -> None:
        self.topic_id = topic_id
        self.records = records
        self.future = future
        self.done = done

    def answer(self, result: list[Produced] | BaseException) -> None:
        if self.done is not None:
            try:
                self.done(result if isinstance(result, BaseException) else result[0])
            except Exception:
                logger.exception("produce_callback_failed")
        elif self.future is not None and not self.future.done():
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)


class GroupCommitter:
    def __init__(
        self,
        writer: Writer,
        cursors: PartitionCursors,
        on_commit: Callable[[set[int]], None],
        *,
        queue_limit: int,
        max_records: int,
    ) -> None:
        self._writer = writer
        self._cursors = cursors
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

    def submit_nowait(
        self, topic_id: int, records: Sequence[Placed]
    ) -> asyncio.Future[list[Produced]] | None:
        """Queue records if there is room now; None when the caller must wait (``submit``)."""
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        if self._queued_records and self._queued_records + len(records) > self._queue_limit:
            return None
        future: asyncio.Future[list[Produced]] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(topic_id, records, future))
        self._queued_records += len(records)
        self._work.set()
        return future

    def submit_soon(self, topic_id: int, record: Placed, done: Done) -> bool:
        """Queue one record whose outcome goes to ``done``; False when the queue is full
        (the caller must wait for room with ``submit``)."""
        if self._closing:
            raise Unavailable("The stream log is shutting down; retry against another gateway.")
        if self._queued_records and self._queued_records + 1 > self._queue_limit:
            return False
        self._queue.append(Pending(topic_id, (record,), None, done))
        self._queued_records += 1
        self._work.set()
        return True

    async def close(self) -> None:
        """Commit what is queued, answer every waiting producer, then stop."""
        self._closing = True
        self._room.set()
        self._work.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        # A commit's producers are answered while the writer thread already commits what
        # queued up meanwhile: answering (acks, fan-out wake-ups) and committing overlap
        # instead of taking turns.
        answered: tuple[list[Pending], list[list[Produced]] | Exception] | None = None
        while True:
            if not self._queue and answered is None:
                if self._closing:
                    return
                await self._work.wait()
                self._work.clear()
                continue
            running: tuple[list[Pending], asyncio.Future[list[list[Produced]]]] | None = None
            if self._queue:
                batch = self._take()
                work = [(p.topic_id, p.records) for p in batch]
                running = batch, self._writer.submit(functools.partial(self._commit_sync, work))
            if answered is not None:
                self._answer(*answered)
                answered = None
            if self._queued_records < self._queue_limit:
                self._room.set()
            if running is not None:
                batch, commit = running
                try:
                    answered = batch, await commit
                except Exception as exc:
                    answered = batch, exc

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

    def _answer(self, batch: list[Pending], outcome: list[list[Produced]] | Exception) -> None:
        if isinstance(outcome, Exception):
            error = Unavailable(f"The stream log could not commit: {outcome}. Retry shortly.")
            for pending in batch:
                pending.answer(error)
            return
        for pending, result in zip(batch, outcome, strict=True):
            pending.answer(result)
        self._on_commit({p.topic_id for p in batch})

    def _commit_sync(
        self, work: list[tuple[int, Sequence[Placed]]], db: sqlite3.Connection
    ) -> list[list[Produced]]:
        """One transaction in the writer thread; the cursors are reloaded if it fails.

        Idempotency keys are first taken to be new: their rows are inserted with ``OR
        IGNORE`` and the count of rows written tells whether one was known. Only then (a
        re-sent record, which is rare) is the transaction rolled back and redone with the
        keys looked up first, so the common case spends no lookup statement.
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            self._cursors.reload_if_changed(db)
            rows, results, touched, keys = self._place(work, {})
            if keys:
                before = db.total_changes
                _insert_many(db, _INSERT_NEW_IDEMPOTENCY, keys)
                if db.total_changes - before < len(keys):
                    # The first try advanced the cursors: read them back from the database.
                    db.execute("ROLLBACK")
                    db.execute("BEGIN IMMEDIATE")
                    self._cursors.reload(db)
                    seen = _known_keys(db, work)
                    rows, results, touched, keys = self._place(work, seen)
                    _insert_many(db, _INSERT_IDEMPOTENCY, keys)
            _insert_many(db, _INSERT_RECORDS, rows)
            _insert_many(db, _UPSERT_STATE, touched)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._cursors.reload(db)
            raise
        return results

    def _place(
        self, work: list[tuple[int, Sequence[Placed]]], seen: dict[tuple[int, str], Produced]
    ) -> tuple[
        list[tuple[object, ...]],
        list[list[Produced]],
        list[tuple[object, ...]],
        list[tuple[object, ...]],
    ]:
        """Give each new record its offset and timestamp (advancing the cursors); a record
        whose idempotency key is in ``seen`` (or earlier in the batch) gets the original."""
        now = int(time.time() * 1000)
        next_offset = self._cursors.next_offset
        last_ts = self._cursors.last_timestamp
        rows: list[tuple[object, ...]] = []
        results: list[list[Produced]] = []
        sizes: dict[tuple[int, int], int] = {}
        keys: list[tuple[object, ...]] = []
        for topic_id, records in work:
            offsets = next_offset[topic_id]
            stamps = last_ts[topic_id]
            produced: list[Produced] = []
            for partition, key, value, headers, idempotency_key in records:
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
        touched: list[tuple[object, ...]] = [
            (t, p, 0, next_offset[t][p], last_ts[t][p], size) for (t, p), size in sizes.items()
        ]
        return rows, results, touched, keys


@functools.lru_cache(maxsize=512)
def _values(columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


def _insert_many(db: sqlite3.Connection, template: str, rows: Sequence[tuple[object, ...]]) -> None:
    if not rows:
        return
    columns = len(rows[0])
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        db.execute(template.format(_values(columns, len(chunk))), [v for row in chunk for v in row])


def _known_keys(
    db: sqlite3.Connection, work: list[tuple[int, Sequence[Placed]]]
) -> dict[tuple[int, str], Produced]:
    """Positions of the idempotency keys of ``work`` that were already written."""
    wanted: dict[int, list[str]] = {}
    for topic_id, records in work:
        for record in records:
            if record[4] is not None:
                wanted.setdefault(topic_id, []).append(record[4])
    found: dict[tuple[int, str], Produced] = {}
    for topic_id, keys in wanted.items():
        # `topic_id = ? AND key IN (...)` is answered from the primary key index.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = db.execute(
                'SELECT key, partition, "offset", timestamp FROM idempotency '
                f"WHERE topic_id = ? AND key IN ({','.join('?' * len(chunk))})",
                [topic_id, *chunk],
            )
            for key, partition, offset, ts in rows:
                found[(topic_id, key)] = Produced(partition, offset, ts, True)
    return found
