"""``EmbeddedLog``: the stream log in one SQLite database (WAL mode).

Records are written by the commit process (``CommitProcess``), a child with its own
connection and interpreter, or with ``writer="thread"`` by the writer thread. The writer
thread (``Writer``) also creates topics, enforces retention and saves consumer offsets;
another connection reads (``read``, tails) through aiosqlite. Several
processes may share the file: SQLite serialises their writers, and ``PRAGMA data_version``
tells a process that another one has committed, so it reloads the partition cursors before
assigning offsets, and a watcher wakes its tails within ``poll_interval_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import msgspec
import structlog

from gateway.errors import InvalidOffset, TopicExists, Unavailable, UnknownTopic
from gateway.streamlog.embedded import retention, transaction
from gateway.streamlog.embedded.checkpointer import RESTART_PAGES, Checkpointer
from gateway.streamlog.embedded.commit_process import CommitProcess
from gateway.streamlog.embedded.committer import Commit, Done, GroupCommitter, Outcome
from gateway.streamlog.embedded.schema import pragmas
from gateway.streamlog.embedded.tail import EmbeddedTail
from gateway.streamlog.embedded.writer import Writer
from gateway.streamlog.interface import (
    Headers,
    NewRecord,
    PartitionInfo,
    Produced,
    Record,
    StartPosition,
    StreamLog,
    Tail,
    TopicDescription,
    TopicSpec,
)
from gateway.streamlog.partitioner import Partitioner
from gateway.streamlog.positions import check_partition

logger = structlog.get_logger(__name__)
_spec_encoder = msgspec.json.Encoder()
_spec_decoder = msgspec.json.Decoder(TopicSpec)
_headers_decoder = msgspec.msgpack.Decoder(tuple[tuple[str, bytes], ...])
CHECKPOINT_INTERVAL_S = 0.25
"""How often the checkpointer copies committed WAL pages into the database (when there were
commits since the last time)."""


class _Topic:
    __slots__ = ("id", "partitioner", "spec")

    def __init__(self, topic_id: int, spec: TopicSpec) -> None:
        self.id = topic_id
        self.spec = spec
        self.partitioner = Partitioner(spec.partitions)


class EmbeddedLog(StreamLog):
    """The default stream log backend.

    ``topics`` are created when missing at ``open``; an existing topic keeps its partition
    count (a different count in the declaration is refused). ``writer`` says where group
    commits run: ``"process"`` (the commit process) or ``"thread"`` (the writer thread).
    """

    def __init__(
        self,
        path: Path,
        *,
        topics: Sequence[TopicSpec] = (),
        durability: Literal["process", "power"] = "process",
        queue_limit: int = 50_000,
        commit_max_records: int = 5_000,
        poll_interval_ms: int = 50,
        retention_interval_s: float = 30.0,
        dedup_window_s: float = 600.0,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        wal_restart_pages: int = RESTART_PAGES,
        writer: Literal["process", "thread"] = "process",
    ) -> None:
        self.path = path
        self._declared = list(topics)
        self._durability = durability
        self._queue_limit = queue_limit
        self._commit_max_records = commit_max_records
        self._poll_interval = poll_interval_ms / 1000
        self._retention_interval = retention_interval_s
        self._dedup_window_ms = int(dedup_window_s * 1000)
        self._checkpoint_interval = checkpoint_interval_s
        self._wal_restart_pages = wal_restart_pages
        self._writer_kind = writer
        # A tail re-checks the table this often even without a wake-up, as a safety net.
        self.idle_recheck_s = max(1.0, self._poll_interval * 20)
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._topics: dict[str, _Topic] = {}
        self._names: dict[int, str] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._committer: GroupCommitter | None = None
        self._checkpointer: Checkpointer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._process: CommitProcess | None = None
        # The writer thread's partition cursors, when group commits run there.
        self._cursors: transaction.Cursors | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, self._durability)
        try:
            await self._writer.open()
            self._reader = await self._connect()
            await self._load_topics()
            for spec in self._declared:
                await self.create_topic(spec, exist_ok=True)
            commit = await self._open_commits()
        except BaseException:
            # Release the connections, the writer thread and the commit process, or the
            # process cannot exit.
            if self._reader is not None:
                await self._reader.close()
            await self._writer.close()
            if self._process is not None:
                await self._process.close()
            raise
        self._committer = GroupCommitter(
            commit,
            self._notify,
            queue_limit=self._queue_limit,
            max_records=self._commit_max_records,
        )
        self._checkpointer = Checkpointer(
            self.path, self._checkpoint_interval, self._wal_restart_pages
        )
        self._checkpointer.start()
        self._tasks = [
            asyncio.create_task(self._watch(), name="log-watcher"),
            asyncio.create_task(self._retain(), name="log-retention"),
        ]
        logger.info("log_opened", path=str(self.path), durability=self._durability)

    async def _open_commits(self) -> Commit:
        """Start where group commits run; the function that hands one over."""
        if self._writer_kind == "process":
            self._process = CommitProcess(self.path, self._durability)
            await self._process.start()
            return self._process.commit
        writer = self._writer_or_fail()
        cursors = self._cursors = transaction.Cursors()
        await writer.call(cursors.reload)

        def commit(work: transaction.Work, done: Callable[[Outcome], None]) -> None:
            future = writer.submit(
                functools.partial(transaction.commit, cursors=cursors, work=work)
            )
            future.add_done_callback(lambda f: done(_outcome(f)))

        return commit

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in pragmas(self._durability):
            await db.execute(pragma)
        return db

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await self._committer.close()
        if self._process is not None:
            await self._process.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Tails wake, see the log closed and end before the reader goes away.
        for event in list(self._wake.values()):
            event.set()
        await asyncio.sleep(0)
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            await self._writer.close()
        logger.info("log_closed", path=str(self.path))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_records(self) -> int:
        return 0 if self._committer is None else self._committer.queued_records

    @property
    def writer_restarts(self) -> int:
        return 0 if self._process is None else self._process.restarts

    @property
    def group_commits(self) -> int:
        return 0 if self._committer is None else self._committer.commits

    @property
    def committed_records(self) -> int:
        return 0 if self._committer is None else self._committer.committed_records

    async def check_writable(self) -> None:
        """Raise ``Unavailable`` unless a write transaction can be taken now."""
        if self._closed or self._writer is None:
            raise Unavailable("The stream log is closed.")
        if self._process is not None:
            await self._process.start()

        def probe(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        await self._writer.call(probe)

    # -- topics -------------------------------------------------------------------------------

    async def _load_topics(self) -> None:
        rows = await self.query("SELECT id, spec FROM topics", ())
        for topic_id, blob in rows:
            spec = _spec_decoder.decode(blob)
            if spec.name not in self._topics:
                self._topics[spec.name] = _Topic(topic_id, spec)
                self._names[topic_id] = spec.name

    async def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        existing = self._topics.get(spec.name)
        if existing is not None:
            if not exist_ok:
                raise TopicExists(f"Topic {spec.name!r} already exists.")
            if existing.spec.partitions != spec.partitions:
                raise TopicExists(
                    f"Topic {spec.name!r} exists with {existing.spec.partitions} partitions; "
                    f"it cannot be changed to {spec.partitions}. Declare it with "
                    f"{existing.spec.partitions} or use a new topic name."
                )
            if existing.spec != spec:
                await self._write(
                    "UPDATE topics SET spec = ? WHERE id = ?",
                    (_spec_encoder.encode(spec), existing.id),
                )
                existing.spec = spec
            return

        def insert(db: sqlite3.Connection) -> tuple[int, TopicSpec]:
            # Another process may have created it since this one loaded the topics.
            row = db.execute("SELECT id, spec FROM topics WHERE name = ?", (spec.name,)).fetchone()
            if row is not None:
                return int(row[0]), _spec_decoder.decode(row[1])
            cursor = db.execute(
                "INSERT INTO topics (name, spec) VALUES (?, ?)",
                (spec.name, _spec_encoder.encode(spec)),
            )
            topic_id = cursor.lastrowid
            assert topic_id is not None
            db.executemany(
                "INSERT INTO partition_state VALUES (?, ?, 0, 0, 0, 0)",
                [(topic_id, p) for p in range(spec.partitions)],
            )
            if self._cursors is not None:
                # Its own writes do not change this connection's data_version.
                self._cursors.add(topic_id, spec.partitions)
            return topic_id, spec

        topic_id, stored = await self._writer_or_fail().transaction(insert)
        if stored != spec:
            self._topics[stored.name] = _Topic(topic_id, stored)
            self._names[topic_id] = stored.name
            await self.create_topic(spec, exist_ok=exist_ok)
            return
        self._topics[spec.name] = _Topic(topic_id, spec)
        self._names[topic_id] = spec.name

    def topic(self, name: str) -> TopicSpec:
        return self._get(name).spec

    def topic_id(self, name: str) -> int:
        return self._get(name).id

    def topics(self) -> list[TopicSpec]:
        return [t.spec for t in self._topics.values()]

    def _get(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            known = ", ".join(sorted(self._topics)) or "none"
            raise UnknownTopic(f"Unknown topic {name!r}; known topics: {known}.")
        return topic

    async def describe_topic(self, name: str) -> TopicDescription:
        topic = self._get(name)
        states, _ = await self.snapshot(topic.id)
        return TopicDescription(
            spec=topic.spec,
            partitions=[
                PartitionInfo(partition=p, start_offset=s, end_offset=e)
                for p, (s, e) in sorted(states.items())
            ],
        )

    # -- records ------------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = (),
        *,
        idempotency_key: str | None = None,
    ) -> Produced:
        entry = self._get(topic)
        waiter = await self._committer_or_fail().submit(
            entry.id, [(entry.partitioner(key), key, value, headers, idempotency_key)]
        )
        return (await waiter)[0]

    def produce_nowait(
        self, topic: str, key: bytes | None, value: bytes, *, idempotency_key: str | None = None
    ) -> asyncio.Future[Produced]:
        entry = self._get(topic)
        placed: list[transaction.Placed] = [
            (entry.partitioner(key), key, value, (), idempotency_key)
        ]
        queued = self._committer_or_fail().submit_nowait(entry.id, placed)
        if queued is None:  # the queue is full: wait for room like ``produce``
            return asyncio.ensure_future(
                self.produce(topic, key, value, idempotency_key=idempotency_key)
            )
        result: asyncio.Future[Produced] = asyncio.get_running_loop().create_future()

        def first(done: asyncio.Future[list[Produced]]) -> None:
            if result.cancelled():
                return
            if done.exception() is not None:
                result.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                result.set_result(done.result()[0])

        queued.add_done_callback(first)
        return result

    def produce_soon(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        done: Done,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        entry = self._get(topic)
        placed = (entry.partitioner(key), key, value, (), idempotency_key)
        if not self._committer_or_fail().submit_soon(entry.id, placed, done):
            # The queue is full: wait for room like ``produce``.
            super().produce_soon(topic, key, value, done, idempotency_key=idempotency_key)

    async def produce_batch(self, topic: str, records: Sequence[NewRecord]) -> list[Produced]:
        if not records:
            return []
        entry = self._get(topic)
        placed = []
        for record in records:
            partition = record.partition
            if partition is None:
                partition = entry.partitioner(record.key)
            else:
                check_partition(entry.spec, partition)
            placed.append(
                (partition, record.key, record.value, record.headers, record.idempotency_key)
            )
        waiter = await self._committer_or_fail().submit(entry.id, placed)
        return await waiter

    def _committer_or_fail(self) -> GroupCommitter:
        if self._committer is None or self._closed:
            raise Unavailable("The stream log is closed; retry against a running gateway.")
        return self._committer

    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        check_partition(self.topic(topic), partition)
        if offset < 0:
            raise InvalidOffset(f"Offset {offset} is negative; offsets start at 0.")
        rows = await self.query(
            'SELECT partition, "offset", timestamp, key, value, headers FROM records '
            'WHERE topic_id = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
            (self.topic_id(topic), partition, offset, max_records),
        )
        return [self.row_to_record(topic, row) for row in rows]

    def tail(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
    ) -> Tail:
        return EmbeddedTail(self, topic, partitions, start, max_batch)

    # -- consumer offsets ------------------------------------------------------------------------

    async def commit_offsets(self, consumer: str, topic: str, offsets: Mapping[int, int]) -> None:
        topic_id = self.topic_id(topic)
        now = _now_ms()
        await self._write(
            'INSERT INTO consumer_offsets (consumer, topic_id, partition, "offset", updated_at) '
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer, topic_id, partition) "
            'DO UPDATE SET "offset" = excluded."offset", updated_at = excluded.updated_at',
            [(consumer, topic_id, p, o, now) for p, o in offsets.items()],
            many=True,
        )

    async def fetch_offsets(self, consumer: str, topic: str) -> dict[int, int]:
        rows = await self.query(
            'SELECT partition, "offset" FROM consumer_offsets WHERE consumer = ? AND topic_id = ?',
            (consumer, self.topic_id(topic)),
        )
        return {partition: offset for partition, offset in rows}

    # -- retention -----------------------------------------------------------------------------

    async def enforce_retention(self) -> int:
        """Remove expired records and records over a size cap now; returns how many."""
        removed = 0
        for topic in list(self._topics.values()):
            removed += await retention.enforce(self, topic.id, topic.spec)
        await self._write(
            "DELETE FROM idempotency WHERE timestamp < ?", (_now_ms() - self._dedup_window_ms,)
        )
        return removed

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(self._retention_interval)
            try:
                removed = await self.enforce_retention()
            except Exception:
                logger.exception("retention_failed")
            else:
                if removed:
                    logger.info("retention_removed", records=removed)

    # -- shared with the committer, tails and retention -----------------------------------------

    def _db(self, db: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if db is None:
            raise Unavailable("The stream log is not open.")
        return db

    async def query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        rows = await self._db(self._reader).execute_fetchall(sql, params)
        return list(rows)

    def _writer_or_fail(self) -> Writer:
        if self._writer is None:
            raise Unavailable("The stream log is not open.")
        return self._writer

    async def _write(self, sql: str, params: Any, *, many: bool = False) -> None:
        def run(db: sqlite3.Connection) -> None:
            if many:
                db.executemany(sql, params)
            else:
                db.execute(sql, params)

        await self._writer_or_fail().transaction(run)

    async def write_in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements in one write transaction."""

        def run(db: sqlite3.Connection) -> None:
            for sql, params in statements:
                db.execute(sql, params)

        await self._writer_or_fail().transaction(run)

    async def snapshot(self, topic_id: int) -> tuple[dict[int, tuple[int, int]], int]:
        """(start, end) offsets of each partition and the highest record id, consistently."""
        # One statement reads one consistent snapshot of both tables.
        rows = await self.query(
            "SELECT partition, start_offset, next_offset, "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'records') "
            "FROM partition_state WHERE topic_id = ?",
            (topic_id,),
        )
        top = rows[0][3] if rows else 0
        return {p: (s, e) for p, s, e, _ in rows}, int(top or 0)

    def row_to_record(self, topic: str, row: Sequence[Any]) -> Record:
        partition, offset, timestamp, key, value, headers = row
        return Record(
            topic,
            partition,
            offset,
            timestamp,
            key,
            value,
            _headers_decoder.decode(headers) if headers else (),
        )

    def wake_event(self, topic_id: int) -> asyncio.Event:
        event = self._wake.get(topic_id)
        if event is None:
            event = self._wake[topic_id] = asyncio.Event()
        return event

    def wake(self, topic_id: int) -> None:
        event = self._wake.pop(topic_id, None)
        if event is not None:
            event.set()

    def _notify(self, topic_ids: set[int]) -> None:
        if self._checkpointer is not None:
            self._checkpointer.committed()
        for topic_id in topic_ids:
            self.wake(topic_id)

    async def _watch(self) -> None:
        """Wake every tail when another connection or process has committed."""
        reader = self._db(self._reader)
        seen = await _data_version(reader)
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                version = await _data_version(reader)
            except Exception:
                logger.exception("log_watch_failed")
                continue
            if version != seen:
                seen = version
                await self._load_topics()
                for topic_id in list(self._wake):
                    self.wake(topic_id)


async def _data_version(db: aiosqlite.Connection) -> int:
    rows = await db.execute_fetchall("PRAGMA data_version", ())
    return int(next(iter(rows))[0])


def _outcome(future: asyncio.Future[list[list[Produced]]]) -> Outcome:
    if future.cancelled():
        return Unavailable("The stream log's commit was cancelled; retry.")
    error = future.exception()
    if error is None:
        return future.result()
    return error if isinstance(error, Exception) else Unavailable(f"The commit failed: {error!r}")


def _now_ms() -> int:
    return int(time.time() * 1000)
