"""``VectorIndexer``: keeps the vector index in step with the memory database.

The memory database's ``memory_history`` is an append-only log of every change (created,
updated, deleted, expired), written in the transaction of the change by the pipeline's
agents and by the memory API alike. The indexer reads it from its position, looks up the
current state of each memory it names, and upserts (memory present) or deletes (gone)
its point; then it saves its position in the memory database's ``meta`` table (key
``vectors:<backend>:<collection>``). Upserts and deletes are idempotent, so a crash
between the index write and the position only repeats work. A collection created empty
(new, or deleted to rebuild it) starts from position 0: the whole database is indexed.

It wakes every ``poll_s`` (0.2 s) for the pipeline's writes; the memory API calls
``catch_up`` after its own writes, so a memory written through the API is searchable by
vector as soon as the write is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from agents.store.schema import MEMORY_COLUMNS
from agents.store.sqlite import MemoryStore, memory_from_row
from gateway.memory.embedders import Embedder
from gateway.memory.vectors import VectorIndex, VectorPoint
from gateway.waiting import wait_event

logger = structlog.get_logger(__name__)

BATCH = 1_000


class IndexerStats:
    def __init__(self) -> None:
        self.indexed = 0
        self.deleted = 0
        self.last_lag_s = 0.0
        self.embed_s = 0.0
        """Seconds spent embedding texts (what a rebuild costs besides the index)."""
        self.write_s = 0.0
        """Seconds spent in the index's upserts and deletes."""


class VectorIndexer:
    def __init__(
        self,
        store: MemoryStore,
        index: VectorIndex,
        embedder: Embedder,
        *,
        poll_s: float = 0.2,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self.poll_s = poll_s
        self.batch = batch
        self.position = 0
        self.stats = IndexerStats()
        self.failure: BaseException | None = None
        self._key = f"vectors:{index.backend}:{index.collection}"
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, fresh: bool) -> None:
        if fresh:
            self.position = 0
            await self._save_position()
        else:
            rows = await self.store.fetch("SELECT value FROM meta WHERE key = ?", (self._key,))
            self.position = int(rows[0][0]) if rows else 0
        self._task = asyncio.create_task(self._run(), name="memory-vector-indexer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def head(self) -> int:
        rows = await self.store.fetch("SELECT coalesce(max(id), 0) FROM memory_history")
        return int(rows[0][0])

    async def lag(self) -> int:
        """History rows not yet indexed."""
        return max(0, await self.head() - self.position)

    async def _run(self) -> None:
        delay = self.poll_s
        while True:
            self._wake.clear()
            try:
                done = await self.catch_up()
                self.failure = None
                delay = self.poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The index (a Qdrant server) may be away: retry, nothing is skipped.
                self.failure = exc
                logger.warning("vector_index_failed", error=str(exc), retry_in_s=delay)
                delay = min(delay * 2, 5.0)
                done = 0
            if done == 0:
                await wait_event(self._wake, delay)

    async def catch_up(self) -> int:
        """Index every change written so far; returns how many history rows were read."""
        total = 0
        async with self._lock:
            while True:
                rows = await self.store.fetch(
                    "SELECT id, memory_id, changed_at FROM memory_history WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (self.position, self.batch),
                )
                if not rows:
                    return total
                await self._apply(list(dict.fromkeys(str(r[1]) for r in rows)))
                self.position = int(rows[-1][0])
                self.stats.last_lag_s = max(0.0, time.time() - int(rows[-1][2]) / 1000)
                await self._save_position()
                total += len(rows)
                if len(rows) < self.batch:
                    return total

    async def _apply(self, memory_ids: list[str]) -> None:
        present: list[VectorPoint] = []
        texts: list[str] = []
        for start in range(0, len(memory_ids), 500):
            chunk = memory_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found = await self.store.fetch(
                f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN ({marks})", chunk
            )
            for row in found:
                m = memory_from_row(row)
                present.append(
                    VectorPoint(
                        memory_id=m.id,
                        organization_id=m.organization_id,
                        user_id=m.user_id,
                        agent_id=m.agent_id,
                        session_id=m.session_id,
                        memory_type=m.memory_type,
                        importance=m.importance,
                        created_at=m.created_at,
                        expires_at=m.expires_at,
                    )
                )
                texts.append(m.content)
        gone = sorted(set(memory_ids) - {p.memory_id for p in present})
        if present:
            started = time.perf_counter()
            vectors = await asyncio.to_thread(self.embedder.embed, texts)
            embedded = time.perf_counter()
            await self.index.upsert(present, vectors)
            self.stats.embed_s += embedded - started
            self.stats.write_s += time.perf_counter() - embedded
            self.stats.indexed += len(present)
        if gone:
            started = time.perf_counter()
            await self.index.delete(gone)
            self.stats.write_s += time.perf_counter() - started
            self.stats.deleted += len(gone)

    async def _save_position(self) -> None:
        async with self.store.transaction() as tx:
            await tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._key, str(self.position)),
            )
