"""``MemoryStore``: the memory database, its transactions and its queries.

One connection writes, in its own thread (``SQLiteThread``). Transactions are serialized
by an asyncio lock (statements of two transactions must not interleave on one
connection) and are ``BEGIN IMMEDIATE``, so the database lock is taken at the start
rather than upgraded half-way. A transaction's statements run as few calls into the
writer thread as the caller can make them (``Transaction.run``, ``Transaction.later``):
the pipeline applies a whole batch in one or two. A second connection, in a second
thread, serves the read-only query functions; WAL gives it consistent snapshots while a
write transaction is open. Passive WAL checkpoints run in a third thread.

Every query function over memories takes the tenancy, ``organization_id`` and
``user_id``, as required keyword arguments: no function lists another user's memories.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec

from agents.config import MEMORY_TYPES, MemoryType
from agents.store.schema import (
    CACHE_KIB,
    MEMORY_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    STATEMENTS,
    pragmas,
)
from agents.store.thread import SQLiteThread
from agents.work import Source
from gateway.streamlog.embedded.checkpointer import Checkpointer

T = TypeVar("T")

Call = tuple[Callable[..., Any], tuple[Any, ...]]
"""``fn(writes, *args)``: a write queued for a transaction (``MemoryStore.later``).
Calls that go to the apply process are pickled: ``fn`` is a ``Writes`` method or a
module-level function."""

CHECKPOINT_INTERVAL_S = 0.25
"""How often a thread of its own (the log's ``Checkpointer``) copies WAL pages back into
the database with a ``PASSIVE`` checkpoint, which never blocks the writer."""
WRITER_AUTOCHECKPOINT_PAGES = 16_384
"""The writer's own checkpoint, inside the ``COMMIT`` that passes this WAL size (64 MiB
with 4 KiB pages). It bounds the WAL: it runs while no other commit can, so it completes
and the next transaction starts the WAL over. Most pages were copied by the passive rounds
by then, yet the commit that runs it still waits for the copy of the rest and two fsyncs
(20-45 ms here). The small transactions of a steady load write about 4 MiB of WAL per
0.3 s, so at SQLite's default of 1,000 pages one commit in thirty paid that: it set the
commit p99 (22-26 ms at 1,000 events/s; 1.4-3 ms at this size, where it comes every few
seconds). (A ``RESTART`` checkpoint from the other thread, the log's way to bound its WAL,
blocked this writer for 45 ms every round at 1,000 events/s and for over a second after a
backlog.)"""
_NO_RESTART = 1 << 62
"""``Checkpointer.restart_pages`` that is never reached: passive rounds only."""

Op = Literal["created", "updated", "deleted", "expired"]

_json = msgspec.json.Encoder()
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])

HISTORY_COLUMNS = (
    "memory_id, version, op, content, importance, metadata, changed_at, "
    "source_topic, source_partition, source_offset"
)
"""The columns of ``memory_history`` that ``version_from_row`` reads, in its order."""


def version_from_row(r: Sequence[Any]) -> MemoryVersion:
    return MemoryVersion(
        memory_id=r[0],
        version=r[1],
        op=r[2],
        content=r[3],
        importance=r[4],
        metadata=_metadata_decoder.decode(r[5]),
        changed_at=r[6],
        source=Source(r[7], r[8], r[9]) if r[7] is not None else None,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    """One memory, current version."""

    id: str
    organization_id: str
    user_id: str
    memory_type: MemoryType
    content: str
    importance: float
    hash: str
    created_at: int
    updated_at: int
    version: int = 1
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = {}
    subject: str | None = None
    embedding: bytes | None = None
    event_time: int | None = None
    expires_at: int | None = None
    access_count: int = 0
    source: Source | None = None
    """The record that made this version (``None`` for edits made through the API)."""

    def row(self) -> tuple[Any, ...]:
        src = self.source
        return (
            self.id,
            self.organization_id,
            self.user_id,
            self.agent_id,
            self.session_id,
            self.memory_type,
            self.content,
            self.importance,
            _json.encode(self.metadata).decode(),
            self.hash,
            self.subject,
            self.embedding,
            self.created_at,
            self.updated_at,
            self.event_time,
            self.expires_at,
            self.access_count,
            self.version,
            src.topic if src else None,
            src.partition if src else None,
            src.offset if src else None,
        )


def memory_from_row(row: Sequence[Any]) -> Memory:
    (
        id_,
        org,
        user,
        agent,
        session,
        memory_type,
        content,
        importance,
        metadata,
        hash_,
        subject,
        embedding,
        created,
        updated,
        event_time,
        expires,
        access,
        version,
        topic,
        partition,
        offset,
    ) = row
    return Memory(
        id=id_,
        organization_id=org,
        user_id=user,
        agent_id=agent,
        session_id=session,
        memory_type=memory_type,
        content=content,
        importance=importance,
        metadata=_metadata_decoder.decode(metadata) if metadata else {},
        hash=hash_,
        subject=subject,
        embedding=embedding,
        created_at=created,
        updated_at=updated,
        event_time=event_time,
        expires_at=expires,
        access_count=access,
        version=version,
        source=Source(topic, partition, offset) if topic is not None else None,
    )


class MemoryVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a memory's history."""

    memory_id: str
    version: int
    op: Op
    content: str
    importance: float
    metadata: dict[str, Any]
    changed_at: int
    source: Source | None


class HistoryRow(NamedTuple):
    """A ``memory_history`` row as the publisher reads it."""

    id: int
    memory_id: str
    organization_id: str
    user_id: str
    memory_type: MemoryType
    version: int
    op: Op
    content: str
    importance: float
    changed_at: int
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    agent_id: str | None


class Change(msgspec.Struct, frozen=True):
    """A change to one memory: ``memory`` is its state after the change (its last state
    for ``deleted`` and ``expired``)."""

    op: Op
    memory: Memory


_SELECT = f"SELECT {MEMORY_COLUMNS} FROM memories"
_INSERT = f"INSERT INTO memories ({MEMORY_COLUMNS}) VALUES ({', '.join('?' * 21)})"
_FTS_ONE = "INSERT INTO memories_fts (rowid, content) VALUES (?, ?)"
_FTS_DELETE = "INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', ?, ?)"
_FTS_AFTER = (
    "INSERT INTO memories_fts (rowid, content) SELECT rowid, content FROM memories WHERE rowid > ?"
)
_INSERT_HISTORY = (
    "INSERT OR IGNORE INTO memory_history (memory_id, organization_id, user_id, memory_type, "
    "version, op, content, importance, metadata, hash, changed_at, source_topic, "
    f"source_partition, source_offset, agent_id) VALUES ({', '.join('?' * 15)})"
)
_UPDATE = (
    "UPDATE memories SET agent_id = ?, session_id = ?, content = ?, importance = ?, "
    "metadata = ?, hash = ?, subject = ?, embedding = ?, updated_at = ?, event_time = ?, "
    "expires_at = ?, version = ?, source_topic = ?, source_partition = ?, source_offset = ? "
    "WHERE id = ?"
)


class Writes:
    """The statements of a write transaction, run in the writer thread.

    Agents receive this object inside one ``Transaction.run`` call, so a whole batch of
    reads and writes costs one hop to the thread. Nothing here commits."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outbox_added = 0
        """Rows queued for publishing (memory updates and audit records) so far."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return int(self.db.execute(sql, params).rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if rows:
            self.db.executemany(sql, rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.db.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params).fetchone()

    # -- memories ---------------------------------------------------------------------------

    def insert_memories(self, memories: Sequence[Memory]) -> None:
        if not memories:
            return
        db = self.db
        if len(memories) == 1:
            cursor = db.execute(_INSERT, memories[0].row())
            db.execute(_FTS_ONE, (cursor.lastrowid, memories[0].content))
            return
        # Rows get rowids above the current largest (one writer), so one statement
        # indexes the whole batch: FTS5 then writes one segment for it.
        (top,) = db.execute("SELECT coalesce(max(rowid), 0) FROM memories").fetchone()
        db.executemany(_INSERT, [m.row() for m in memories])
        db.execute(_FTS_AFTER, (top,))

    def update_memory(self, memory: Memory) -> None:
        db = self.db
        old = db.execute(
            "SELECT rowid, content FROM memories WHERE id = ?", (memory.id,)
        ).fetchone()
        row = memory.row()
        # Every column but id, tenancy, memory_type, created_at and access_count.
        db.execute(_UPDATE, (*row[3:5], *row[6:12], *row[13:16], *row[17:], memory.id))
        if old is not None and old[1] != memory.content:
            db.execute(_FTS_DELETE, old)
            db.execute(_FTS_ONE, (old[0], memory.content))

    def delete_memory(self, memory_id: str) -> None:
        db = self.db
        old = db.execute(
            "SELECT rowid, content FROM memories WHERE id = ?", (memory_id,)
        ).fetchone()
        if old is not None:
            db.execute("DELETE FROM memories WHERE rowid = ?", (old[0],))
            db.execute(_FTS_DELETE, old)

    def memory(self, *, organization_id: str, user_id: str, memory_id: str) -> Memory | None:
        row = self.fetchone(
            _SELECT + " WHERE id = ? AND organization_id = ? AND user_id = ?",
            (memory_id, organization_id, user_id),
        )
        return memory_from_row(row) if row else None

    def by_hash(
        self, *, organization_id: str, user_id: str, memory_type: str, hash: str
    ) -> Memory | None:
        if memory_type not in MEMORY_TYPES:
            raise ValueError(f"unknown memory type {memory_type!r}")
        # The type is written into the SQL so that facts use their partial index.
        row = self.fetchone(
            _SELECT + f" WHERE organization_id = ? AND user_id = ? AND memory_type = "
            f"'{memory_type}' AND hash = ? LIMIT 1",
            (organization_id, user_id, hash),
        )
        return memory_from_row(row) if row else None

    def by_subject(
        self, *, organization_id: str, user_id: str, memory_type: str, subject: str
    ) -> Memory | None:
        row = self.fetchone(
            _SELECT + " WHERE organization_id = ? AND user_id = ? AND memory_type = ? "
            "AND subject = ? ORDER BY updated_at DESC LIMIT 1",
            (organization_id, user_id, memory_type, subject),
        )
        return memory_from_row(row) if row else None

    def recent_memories(
        self, *, organization_id: str, user_id: str, memory_type: str, limit: int
    ) -> list[Memory]:
        """This user's ``limit`` most recently updated memories of a type, newest first."""
        rows = self.fetchall(
            _SELECT + " WHERE organization_id = ? AND user_id = ? AND memory_type = ? "
            "ORDER BY updated_at DESC LIMIT ?",
            (organization_id, user_id, memory_type, limit),
        )
        return [memory_from_row(row) for row in rows]

    def data_version(self) -> int:
        """Changes when another connection commits (``PRAGMA data_version``): what a
        cache of this connection's reads checks before it is trusted."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def recent_embeddings(
        self, *, organization_id: str, user_id: str, memory_type: str, limit: int
    ) -> list[tuple[str, bytes | None]]:
        """``(id, embedding)`` of this user's ``limit`` most recently updated memories of a
        type: what near-duplicate detection compares, without decoding whole rows."""
        return self.fetchall(
            "SELECT id, embedding FROM memories WHERE organization_id = ? AND user_id = ? "
            "AND memory_type = ? ORDER BY updated_at DESC LIMIT ?",
            (organization_id, user_id, memory_type, limit),
        )

    def record_history(self, changes: Sequence[Change], at: int) -> None:
        """Append the changes to ``memory_history``; each row is also a memory update
        waiting to be published (see ``MemoryStore.pending_updates``)."""
        rows = []
        for change in changes:
            m = change.memory
            src = m.source
            rows.append(
                (
                    m.id,
                    m.organization_id,
                    m.user_id,
                    m.memory_type,
                    m.version,
                    change.op,
                    m.content,
                    m.importance,
                    _json.encode(m.metadata).decode(),
                    m.hash,
                    at,
                    src.topic if src else None,
                    src.partition if src else None,
                    src.offset if src else None,
                    m.agent_id,
                )
            )
        if rows:
            self.db.executemany(_INSERT_HISTORY, rows)
            self.outbox_added += len(rows)

    # -- pipeline bookkeeping -----------------------------------------------------------------

    def applied(self, sources: Sequence[Source]) -> set[Source]:
        """Which of ``sources`` were applied already."""
        found: set[Source] = set()
        for start in range(0, len(sources), 200):
            chunk = sources[start : start + 200]
            values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
            params = [v for s in chunk for v in (s.topic, s.partition, s.offset, s.seq)]
            rows = self.fetchall(
                'SELECT topic, partition, "offset", seq FROM applied '
                f'WHERE (topic, partition, "offset", seq) IN (VALUES {values})',
                params,
            )
            found.update(Source(*row) for row in rows)
        return found

    def mark_applied(self, rows: Iterable[tuple[Source, str | None]], at: int) -> None:
        self.executemany(
            'INSERT OR IGNORE INTO applied (topic, partition, "offset", seq, memory_id, '
            "applied_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(s.topic, s.partition, s.offset, s.seq, memory_id, at) for s, memory_id in rows],
        )

    def save_offsets(self, consumer: str, offsets: Mapping[tuple[str, int], int]) -> None:
        at = now_ms()
        self.executemany(
            'INSERT INTO consumer_offsets (consumer, topic, partition, "offset", updated_at) '
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
            '"offset" = max("offset", excluded."offset"), updated_at = excluded.updated_at',
            [(consumer, t, p, o, at) for (t, p), o in offsets.items()],
        )

    def add_outbox(self, rows: Iterable[tuple[str, bytes | None, bytes, str]]) -> int:
        """Queue records to produce: ``(topic, key, value, idempotency_key)``."""
        at = now_ms()
        values = [(topic, key, value, idem, at) for topic, key, value, idem in rows]
        self.executemany(
            "INSERT INTO outbox (topic, key, value, idempotency_key, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            values,
        )
        self.outbox_added += len(values)
        return len(values)

    def defer(self, rows: Iterable[tuple[str, Source, bytes]]) -> None:
        """Store items for later: ``(agent, source, encoded work)``."""
        at = now_ms()
        self.executemany(
            'INSERT OR IGNORE INTO deferred (agent, topic, partition, "offset", seq, work, '
            "deferred_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(a, s.topic, s.partition, s.offset, s.seq, w, at) for a, s, w in rows],
        )

    def undefer(self, ids: Sequence[int]) -> None:
        self.executemany("DELETE FROM deferred WHERE id = ?", [(i,) for i in ids])

    def reject(self, rows: Iterable[tuple[Source, str, str, bytes | None]]) -> None:
        """Record items that cannot become memories: ``(source, stage, reason, value)``."""
        at = now_ms()
        self.executemany(
            'INSERT OR IGNORE INTO rejected (topic, partition, "offset", seq, stage, reason, '
            "value, rejected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(s.topic, s.partition, s.offset, s.seq, st, r, v, at) for s, st, r, v in rows],
        )

    def save_processor(
        self,
        consumer: str,
        states: Mapping[str, bytes],
        forgotten: Iterable[str],
        positions: Mapping[tuple[str, int], int],
    ) -> None:
        """The stream processor's changed baselines and counted positions."""
        self.executemany(
            "INSERT OR REPLACE INTO processor_state (consumer, key, state) VALUES (?, ?, ?)",
            [(consumer, key, state) for key, state in states.items()],
        )
        self.executemany(
            "DELETE FROM processor_state WHERE consumer = ? AND key = ?",
            [(consumer, key) for key in forgotten],
        )
        self.executemany(
            'INSERT OR REPLACE INTO processor_positions (consumer, topic, partition, "offset") '
            "VALUES (?, ?, ?, ?)",
            [(consumer, t, p, o) for (t, p), o in positions.items()],
        )

    def save_aggregates(self, rows: Iterable[Sequence[Any]]) -> None:
        """Upsert windows: ``(organization_id, user_id, event_type, window_start, window_ms,
        count, importance_sum, rate_per_s)``."""
        self.executemany(
            "INSERT OR REPLACE INTO aggregates (organization_id, user_id, event_type, "
            "window_start, window_ms, count, importance_sum, rate_per_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def save_published(self, position: int) -> None:
        """How far ``memory_history`` has been produced to the log."""
        self.db.execute(
            "UPDATE meta SET value = ? WHERE key = 'updates_published' AND CAST(value AS "
            "INTEGER) < ?",
            (str(position), position),
        )


class Transaction:
    """One write transaction, used from the event loop (see ``MemoryStore.transaction``).

    ``run(fn, *args)`` runs ``fn(writes, *args)`` in the writer thread: the way to do many
    statements in one hop. ``later(fn, *args)`` queues such a call to run just before
    ``COMMIT`` (in the same hop). The other methods are one-call shortcuts of
    ``Writes``. ``BEGIN IMMEDIATE`` is sent with the first call, so a transaction that
    does nothing costs nothing."""

    def __init__(self, thread: SQLiteThread) -> None:
        self._thread = thread
        self._writes: Writes | None = None
        self._later: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    @property
    def outbox_added(self) -> int:
        return self._writes.outbox_added if self._writes is not None else 0

    @property
    def begun(self) -> bool:
        return self._writes is not None

    def _enter(self, db: sqlite3.Connection) -> Writes:
        writes = self._writes
        if writes is None:
            db.execute("BEGIN IMMEDIATE")
            writes = self._writes = Writes(db)
        if self._later:
            later, self._later = self._later, []
            for fn, args in later:
                fn(writes, *args)
        return writes

    def _call(self, db: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._enter(db), *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(writes, *args)`` in the writer thread, inside this transaction."""
        return await self._thread.call(self._call, fn, args)

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(writes, *args)`` to run with the next call, or before ``COMMIT``."""
        self._later.append((fn, args))

    def prepend(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
        """Queue ``calls`` to run before the calls queued with ``later`` so far."""
        self._later[:0] = calls

    def _commit(self, db: sqlite3.Connection) -> None:
        if self._writes is None and not self._later:
            return
        self._enter(db)
        db.execute("COMMIT")

    def _rollback(self, db: sqlite3.Connection) -> None:
        self._later.clear()
        # The connection may already have ended the transaction (a failed COMMIT).
        if db.in_transaction:
            db.execute("ROLLBACK")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return await self.run(Writes.execute, sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.run(Writes.executemany, sql, list(rows))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self.run(Writes.fetchall, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self.run(Writes.fetchone, sql, params)

    async def insert_memories(self, memories: Sequence[Memory]) -> None:
        await self.run(Writes.insert_memories, memories)

    async def update_memory(self, memory: Memory) -> None:
        await self.run(Writes.update_memory, memory)

    async def delete_memory(self, memory_id: str) -> None:
        await self.run(Writes.delete_memory, memory_id)

    async def memory(self, *, organization_id: str, user_id: str, memory_id: str) -> Memory | None:
        return await self.run(
            functools.partial(
                Writes.memory,
                organization_id=organization_id,
                user_id=user_id,
                memory_id=memory_id,
            )
        )

    async def by_hash(
        self, *, organization_id: str, user_id: str, memory_type: str, hash: str
    ) -> Memory | None:
        return await self.run(
            functools.partial(
                Writes.by_hash,
                organization_id=organization_id,
                user_id=user_id,
                memory_type=memory_type,
                hash=hash,
            )
        )

    async def record_history(self, changes: Sequence[Change], at: int) -> None:
        await self.run(Writes.record_history, changes, at)

    async def applied(self, sources: Sequence[Source]) -> set[Source]:
        return await self.run(Writes.applied, sources)

    async def mark_applied(self, rows: Iterable[tuple[Source, str | None]], at: int) -> None:
        await self.run(Writes.mark_applied, list(rows), at)

    async def save_offsets(self, consumer: str, offsets: Mapping[tuple[str, int], int]) -> None:
        await self.run(Writes.save_offsets, consumer, offsets)

    async def add_outbox(self, rows: Iterable[tuple[str, bytes | None, bytes, str]]) -> int:
        return await self.run(Writes.add_outbox, list(rows))

    async def defer(self, rows: Iterable[tuple[str, Source, bytes]]) -> None:
        await self.run(Writes.defer, list(rows))

    async def undefer(self, ids: Sequence[int]) -> None:
        await self.run(Writes.undefer, ids)

    async def reject(self, rows: Iterable[tuple[Source, str, str, bytes | None]]) -> None:
        await self.run(Writes.reject, list(rows))


class MemoryStore:
    """The memory database. ``open`` creates it when missing (or upgrades it)."""

    def __init__(self, path: Path, *, durability: Literal["process", "power"] = "process") -> None:
        self.path = path
        self.durability = durability
        self._writer: SQLiteThread | None = None
        self._reader: SQLiteThread | None = None
        self._tx_lock = asyncio.Lock()
        self._elsewhere = 0
        """Transactions sent to another connection (``run_elsewhere``) not yet settled."""
        self._settled = asyncio.Event()
        self._settled.set()
        self.outbox_count = 0
        """Records waiting to be produced: memory updates (history rows after the published
        position) and outbox rows. Kept up to date by this process's transactions and the
        publisher; writes of another process are counted when the publisher finds them."""
        self.on_transaction: Callable[[float], None] | None = None
        """Called with each committed write transaction's duration in seconds (metrics)."""
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._checkpointer: Checkpointer | None = None
        self.unsaved_published: int | None = None
        """A published position (``Writes.save_published``) that the next transaction
        saves, whoever runs it: the publisher needs no transaction of its own while
        others are committing (see ``OutboxPublisher``)."""

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = SQLiteThread(
            self.path,
            (
                *pragmas(self.durability, cache_kib=CACHE_KIB),
                f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}",
            ),
            name="memory-writer",
        )
        await writer.open()
        try:
            await writer.call(_create_or_upgrade, self.path)
            self._writer = writer
            self._reader = SQLiteThread(self.path, pragmas(self.durability), name="memory-reader")
            await self._reader.open()
            (pending,) = await writer.call(_fetchone, _PENDING_COUNT)
        except BaseException:
            await self.close()
            await writer.close()
            raise
        self.outbox_count = int(pending)
        self._checkpointer = Checkpointer(
            self.path, CHECKPOINT_INTERVAL_S, restart_pages=_NO_RESTART
        )
        self._checkpointer.start()

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        for thread in (self._reader, self._writer):
            if thread is not None:
                await thread.close()
        self._writer = self._reader = None

    def _write_thread(self) -> SQLiteThread:
        if self._writer is None:
            raise RuntimeError(f"the memory store {self.path} is not open; call open() first")
        return self._writer

    def _read_thread(self) -> SQLiteThread:
        if self._reader is None:
            raise RuntimeError(f"the memory store {self.path} is not open; call open() first")
        return self._reader

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(writes, *args)`` for the next transaction to commit, whichever it is
        (queued calls run in order, before that transaction's own ``later`` calls). A
        transaction that fails puts them back for the one after."""
        self._pending.append((fn, args))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction: committed when the block ends, rolled back on error.
        It also commits the calls queued with ``later`` and the published position."""
        thread = self._write_thread()
        async with self._tx_lock:
            await self._settled.wait()  # transactions sent elsewhere have committed
            started = time.perf_counter()
            tx = Transaction(thread)
            taken: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
            try:
                yield tx
                taken, self._pending = self._pending, []
                tx.prepend(taken)
                position = self.unsaved_published
                if position is not None:
                    tx.later(Writes.save_published, position)
                await thread.call(tx._commit)
                if self._checkpointer is not None:
                    self._checkpointer.committed()
                if self.unsaved_published == position:
                    self.unsaved_published = None
            except BaseException:
                self._pending[:0] = taken
                with contextlib.suppress(Exception):
                    await thread.call(tx._rollback)
                raise
            self.outbox_count += tx.outbox_added
            if self.on_transaction is not None and tx.begun:
                self.on_transaction(time.perf_counter() - started)

    async def run_elsewhere(
        self, submit: Callable[[list[Call], list[Call]], asyncio.Future[tuple[T, int]]]
    ) -> T:
        """One write transaction made by another connection (the agents' apply process).

        ``submit(before, after)`` must send, without awaiting, a transaction that runs
        ``before`` (the calls queued with ``later``), its own writes and ``after`` (the
        published position); its future has ``(result, outbox rows added)`` once that
        committed. Transactions sent this way commit in the order they are sent, and may
        be several on their way at once; this store's own transactions wait until none
        is (so the database still sees one writer at a time)."""
        async with self._tx_lock:
            started = time.perf_counter()
            taken, self._pending = self._pending, []
            position = self.unsaved_published
            after: list[Call] = [] if position is None else [(Writes.save_published, (position,))]
            done = submit(taken, after)
            self._elsewhere += 1
            self._settled.clear()

        def settled(future: asyncio.Future[tuple[T, int]]) -> None:
            self._elsewhere -= 1
            if not self._elsewhere:
                self._settled.set()
            if future.cancelled() or future.exception() is not None:
                self._pending[:0] = taken
                return
            if self._checkpointer is not None:
                self._checkpointer.committed()
            if self.unsaved_published == position:
                self.unsaved_published = None
            self.outbox_count += future.result()[1]
            if self.on_transaction is not None:
                self.on_transaction(time.perf_counter() - started)

        done.add_done_callback(settled)
        # Shielded: the transaction goes on if the caller is cancelled, and its outcome
        # is still accounted for.
        result, _ = await asyncio.shield(done)
        return result

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._read_thread().call(_fetchall, sql, params)

    # -- query functions (tenancy required) -----------------------------------------------------

    async def get(
        self, *, organization_id: str, user_id: str, memory_id: str, touch: bool = False
    ) -> Memory | None:
        """One memory of this user; ``touch`` counts the access (``access_count``)."""
        if touch:
            async with self.transaction() as tx:
                await tx.execute(
                    "UPDATE memories SET access_count = access_count + 1 "
                    "WHERE id = ? AND organization_id = ? AND user_id = ?",
                    (memory_id, organization_id, user_id),
                )
                return await tx.memory(
                    organization_id=organization_id, user_id=user_id, memory_id=memory_id
                )
        rows = await self._fetch(
            _SELECT + " WHERE id = ? AND organization_id = ? AND user_id = ?",
            (memory_id, organization_id, user_id),
        )
        return memory_from_row(rows[0]) if rows else None

    async def list_memories(
        self,
        *,
        organization_id: str,
        user_id: str,
        memory_type: MemoryType | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Memory]:
        """This user's memories, most recently updated first."""
        sql = _SELECT + " WHERE organization_id = ? AND user_id = ?"
        params: list[Any] = [organization_id, user_id]
        for column, value in (
            ("memory_type", memory_type),
            ("agent_id", agent_id),
            ("session_id", session_id),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        sql += " ORDER BY updated_at DESC, rowid DESC LIMIT ?"
        params.append(limit)
        return [memory_from_row(r) for r in await self._fetch(sql, params)]

    async def count(
        self, *, organization_id: str, user_id: str, memory_type: MemoryType | None = None
    ) -> int:
        sql = "SELECT count(*) FROM memories WHERE organization_id = ? AND user_id = ?"
        params: list[Any] = [organization_id, user_id]
        if memory_type is not None:
            sql += " AND memory_type = ?"
            params.append(memory_type)
        return int((await self._fetch(sql, params))[0][0])

    async def history(
        self, *, organization_id: str, user_id: str, memory_id: str
    ) -> list[MemoryVersion]:
        """Every version of one memory of this user, oldest first."""
        rows = await self._fetch(
            f"SELECT {HISTORY_COLUMNS} FROM memory_history "
            "WHERE organization_id = ? AND user_id = ? AND memory_id = ? ORDER BY id",
            (organization_id, user_id, memory_id),
        )
        return [version_from_row(r) for r in rows]

    async def keyword_search(
        self, *, organization_id: str, user_id: str, text: str, limit: int = 20
    ) -> list[Memory]:
        """This user's memories containing every word of ``text``, best match first."""
        words = _SEARCH_WORDS.findall(text)
        if not words:
            return []
        query = " ".join('"' + w.replace('"', "") + '"' for w in words)
        columns = ", ".join(f"m.{c.strip()}" for c in MEMORY_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns} FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid "
            "WHERE memories_fts MATCH ? AND m.organization_id = ? AND m.user_id = ? "
            "ORDER BY bm25(memories_fts) LIMIT ?",
            (query, organization_id, user_id, limit),
        )
        return [memory_from_row(r) for r in rows]

    # -- pipeline state ---------------------------------------------------------------------------

    async def offsets(self, consumer: str) -> dict[tuple[str, int], int]:
        rows = await self._fetch(
            'SELECT topic, partition, "offset" FROM consumer_offsets WHERE consumer = ?',
            (consumer,),
        )
        return {(t, p): o for t, p, o in rows}

    async def processor_state(
        self, consumer: str
    ) -> tuple[list[tuple[str, bytes]], dict[tuple[str, int], int]]:
        states = await self._fetch(
            "SELECT key, state FROM processor_state WHERE consumer = ?", (consumer,)
        )
        positions = await self._fetch(
            'SELECT topic, partition, "offset" FROM processor_positions WHERE consumer = ?',
            (consumer,),
        )
        return [(k, bytes(v)) for k, v in states], {(t, p): o for t, p, o in positions}

    async def aggregates(
        self, *, organization_id: str, user_id: str, since: int = 0
    ) -> list[tuple[str, int, int, float, float]]:
        """This user's windows from ``since``: ``(event_type, window_start, count,
        importance_sum, rate_per_s)``, oldest first."""
        rows = await self._fetch(
            "SELECT event_type, window_start, count, importance_sum, rate_per_s FROM aggregates "
            "WHERE organization_id = ? AND user_id = ? AND window_start >= ? "
            "ORDER BY window_start, event_type",
            (organization_id, user_id, since),
        )
        return [tuple(r) for r in rows]

    async def fetch_deferred(
        self, agent: str, after_id: int, limit: int
    ) -> list[tuple[int, bytes]]:
        rows = await self._fetch(
            "SELECT id, work FROM deferred WHERE agent = ? AND id > ? ORDER BY id LIMIT ?",
            (agent, after_id, limit),
        )
        return [(int(i), bytes(w)) for i, w in rows]

    async def deferred_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT agent, count(*) FROM deferred GROUP BY agent")
        return {a: int(n) for a, n in rows}

    async def recheck_horizon(self) -> dict[tuple[str, int], int]:
        """Per partition, one past the highest offset applied or deferred (see
        ``Progress.may_be_applied``)."""
        rows = await self._fetch(
            'SELECT topic, partition, max("offset") + 1 FROM (SELECT topic, partition, "offset" '
            'FROM applied UNION ALL SELECT topic, partition, "offset" FROM deferred) '
            "GROUP BY topic, partition"
        )
        return {(t, p): int(o) for t, p, o in rows}

    async def published_position(self) -> int:
        """The last ``memory_history`` id produced to the log."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = 'updates_published'")
        return int(rows[0][0]) if rows else 0

    async def pending_updates(self, after: int, limit: int) -> list[HistoryRow]:
        """History rows after id ``after``, oldest first: the memory updates to produce."""
        rows = await self._fetch(
            "SELECT id, memory_id, organization_id, user_id, memory_type, version, op, content, "
            "importance, changed_at, source_topic, source_partition, source_offset, agent_id "
            "FROM memory_history WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [HistoryRow(*row) for row in rows]

    async def outbox_batch(self, limit: int) -> list[tuple[int, str, bytes | None, bytes, str]]:
        rows = await self._fetch(
            "SELECT id, topic, key, value, idempotency_key FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(int(i), t, k, bytes(v), ik) for i, t, k, v, ik in rows]

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Read-only SQL for pipeline state and operations. Tenant data is read through
        ``agents.store.filters``, whose queries always apply a ``MemoryFilter``."""
        return await self._fetch(sql, params)


_SEARCH_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


_PENDING_COUNT = (
    "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM memory_history WHERE id > "
    "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'updates_published'))"
)


def _fetchall(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _fetchone(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    return db.execute(sql, params).fetchone()


def _create_or_upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or bring an older one up to ``SCHEMA_VERSION``, in one
    transaction (a second process opening the file meanwhile waits for it)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has memory schema version {version}; this version of the pipeline "
                f"uses {SCHEMA_VERSION}. Use a matching release or a new data directory."
            )
        while version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            version += 1
        for statement in STATEMENTS:
            db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('updates_published', '0')")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
