"""``MemoryService``: the memory API's operations over the memory database and vector index.

It owns what the HTTP routes need and nothing of HTTP: writes (each one transaction that
also appends the history and queues the memory updates in the pipeline's outbox, so they
reach ``memory-updates`` like the pipeline's own changes), tenancy-filtered reads
(``agents.store.filters``), the hybrid search, and the vector index with its indexer.

Where the memory database comes from:

- the gateway runs the pipeline (``memory_pipeline=serve``): the pipeline's own
  ``MemoryStore`` (one writer connection per process); the pipeline's outbox publisher is
  woken after each write, so updates are produced at once;
- the pipeline runs apart (``memory_pipeline=off``, ``agentmem-gateway agents``): the
  service opens ``<data_dir>/memory.sqlite3`` itself. SQLite in WAL mode lets two
  processes share it: readers never block, write transactions are serialized by SQLite's
  lock (``BEGIN IMMEDIATE`` with a 10 s busy timeout). Updates written here wait in the
  outbox until the pipeline's publisher polls it (within a second while it runs; at its
  next start otherwise).

Hybrid search (documented in ``docs/memory-api.md``): keyword candidates (FTS5, BM25;
terms found in more than 5 % of all memories are left out like stopwords) and vector
candidates (cosine) of the same filter are fused by reciprocal rank, then
weighted by recency and importance::

    relevance = (sum over lists of 1 / (60 + rank)) / (2 / 61)          in (0, 1]
    recency   = 0.5 ** (age_days / 30)                                  age since updated_at
    score     = relevance * (0.6 + 0.2 * recency + 0.2 * importance)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from agents.config import MemoryType, PipelineConfig
from agents.embedding import HashedNgramEmbedder, pack
from agents.memory.base import content_hash, record_changes
from agents.metrics import PipelineMetrics
from agents.runner import memory_database_path
from agents.store import filters
from agents.store.filters import MemoryFilter, Page
from agents.store.schema import MEMORY_COLUMNS
from agents.store.sqlite import (
    Change,
    Memory,
    MemoryStore,
    MemoryVersion,
    Transaction,
    memory_from_row,
    now_ms,
)
from gateway.memory.embedders import Embedder, load_embedder
from gateway.memory.indexer import VectorIndexer
from gateway.memory.requests import MemoryNotFound, MemoryServiceUnavailable
from gateway.memory.vectors import ExactIndex, QdrantIndex, VectorIndex

if TYPE_CHECKING:
    from agents.runner import MemoryPipeline
    from gateway.metrics import Metrics
    from gateway.settings import Settings

logger = structlog.get_logger(__name__)

RRF_K = 60
RECENCY_HALF_LIFE_DAYS = 30.0
WEIGHT_BASE, WEIGHT_RECENCY, WEIGHT_IMPORTANCE = 0.6, 0.2, 0.2
DAY_MS = 86_400_000

_COLUMNS = ", ".join(f"m.{c.strip()}" for c in MEMORY_COLUMNS.split(","))


def new_memory_id() -> str:
    return "mem_" + secrets.token_hex(12)


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """A memory to create, validated and placed in a tenancy."""

    organization_id: str
    user_id: str
    content: str
    memory_type: MemoryType
    importance: float
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = {}
    expires_at: int | None = None


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    memory: Memory
    score: float
    relevance: float
    recency: float
    importance: float
    keyword_rank: int | None
    vector_rank: int | None
    similarity: float | None


class MemoryService:
    def __init__(
        self,
        settings: Settings,
        pipeline: MemoryPipeline | None = None,
        metrics: Metrics | None = None,
        *,
        vectors: str | None = None,
        embedder: str | None = None,
    ) -> None:
        """``vectors`` (``qdrant``, ``exact``, ``off``) and ``embedder`` (``hashed``,
        ``minilm``) override the settings ``memory_vectors`` and ``memory_embedder``."""
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        config = pipeline.config if pipeline is not None else PipelineConfig.from_settings(settings)
        self._own_store = pipeline is None
        self.store = (
            pipeline.store
            if pipeline is not None
            else MemoryStore(memory_database_path(settings.data_dir), durability=config.durability)
        )
        self.vectors_backend = vectors or str(getattr(settings, "memory_vectors", "qdrant"))
        self.embedder_name = embedder or str(getattr(settings, "memory_embedder", "hashed"))
        self.embedder: Embedder | None = None
        self.index: VectorIndex | None = None
        self.indexer: VectorIndexer | None = None
        self.vector_error: str | None = None
        self._sparse = HashedNgramEmbedder()
        self._terms = filters.TermStatistics(self.store)
        self._opened = False
        self._sampler: asyncio.Task[None] | None = None
        self.pipeline_metrics = PipelineMetrics(metrics.registry) if metrics is not None else None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (when the pipeline does not run here) and the vector index.

        A vector index that cannot be opened (Qdrant in use by another process, a server
        away, a collection of another model) is logged and leaves search to keywords
        alone; ``readiness`` reports it."""
        if self._own_store:
            await self.store.open()
        self._opened = True
        pm = self.pipeline_metrics
        if pm is not None:
            if self.pipeline is not None:
                pm.attach(self.pipeline.worker)
            else:
                self.store.on_transaction = pm.store_transaction.observe
            self._sampler = asyncio.create_task(self._sample(pm), name="memory-metrics")
        if self.vectors_backend == "off":
            return
        try:
            self.embedder = load_embedder(self.embedder_name)
            self.index = self._make_index(self.embedder)
            fresh = await self.index.open()
            self.indexer = VectorIndexer(self.store, self.index, self.embedder)
            await self.indexer.start(fresh)
        except Exception as exc:
            self.vector_error = str(exc)
            self.index = self.indexer = None
            logger.error("memory_vector_index_unavailable", error=str(exc))

    async def _sample(self, pm: PipelineMetrics, every_s: float = 1.0) -> None:
        while True:
            try:
                await pm.sample()
                if self.indexer is not None:
                    pm.vector_lag.set(await self.indexer.lag())
                process = getattr(self.index, "process", None)
                if process is not None:
                    pm.vector_process_restarts.set(process.restarts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("memory_metrics_sample_failed", error=str(exc))
            await asyncio.sleep(every_s)

    def _make_index(self, embedder: Embedder) -> VectorIndex:
        data_dir: Path = self.settings.data_dir
        if self.vectors_backend == "exact":
            return ExactIndex(embedder.name, embedder.dim, directory=data_dir / "vectors")
        if self.vectors_backend != "qdrant":
            raise ValueError(
                f"unknown vector backend {self.vectors_backend!r}: use qdrant, exact or off"
            )
        url = getattr(self.settings, "memory_qdrant_url", None)
        if url:
            api_key = getattr(self.settings, "memory_qdrant_api_key", None)
            return QdrantIndex(embedder.name, embedder.dim, url=str(url), api_key=api_key)
        return QdrantIndex(embedder.name, embedder.dim, path=data_dir / "qdrant")

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.indexer is not None:
            await self.indexer.stop()
        if self.index is not None:
            await self.index.close()
        if self._own_store and self.store.is_open:
            await self.store.close()
        self._opened = False

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, parts): the memory store, the pipeline when it runs here, the vectors."""
        parts: dict[str, str] = {}
        ready = True
        if self.pipeline is not None:
            if self.pipeline.failure is not None:
                parts["pipeline"] = f"failed: {self.pipeline.failure}"
                ready = False
            else:
                parts["pipeline"] = "ok"
        else:
            parts["pipeline"] = "off (runs in `agentmem-gateway agents`)"
        if not self.store.is_open:
            parts["memory_store"] = "closed"
            ready = False
        else:
            parts["memory_store"] = "ok"
        if self.vectors_backend == "off":
            parts["vectors"] = "off"
        elif self.index is None:
            parts["vectors"] = f"unavailable: {self.vector_error} (search uses keywords only)"
        elif self.indexer is not None and self.indexer.failure is not None:
            parts["vectors"] = f"failing: {self.indexer.failure} (retrying)"
        else:
            parts["vectors"] = "ok"
        return ready, parts

    def _check(self) -> None:
        if not self._opened or not self.store.is_open:
            raise MemoryServiceUnavailable(
                "The memory store is not open (the gateway is starting or stopping); retry."
            )
        if self.pipeline is not None and self.pipeline.failure is not None:
            raise MemoryServiceUnavailable(
                f"The memory pipeline failed ({self.pipeline.failure}); see the gateway's log. "
                "Restart the gateway to resume from the committed offsets."
            )

    def _observe(self, operation: str, started: float) -> None:
        if self.pipeline_metrics is not None:
            self.pipeline_metrics.api_latency.labels(operation).observe(
                time.perf_counter() - started
            )

    # -- writes ----------------------------------------------------------------------------------

    def _materialize(self, draft: Draft, now: int) -> Memory:
        embedding = None
        if draft.memory_type == "semantic":
            # The semantic agent compares new facts with stored ones by this vector.
            embedding = pack(self._sparse.embed(draft.content))
        return Memory(
            id=new_memory_id(),
            organization_id=draft.organization_id,
            user_id=draft.user_id,
            memory_type=draft.memory_type,
            content=draft.content,
            importance=draft.importance,
            hash=content_hash(draft.content),
            created_at=now,
            updated_at=now,
            agent_id=draft.agent_id,
            session_id=draft.session_id,
            metadata={**draft.metadata, "origin": "api"},
            embedding=embedding,
            event_time=now,
            expires_at=draft.expires_at,
        )

    async def create(self, drafts: Sequence[Draft]) -> list[Memory]:
        """Create memories in one transaction, with their history and memory updates."""
        self._check()
        started = time.perf_counter()
        now = now_ms()
        memories = [self._materialize(d, now) for d in drafts]
        async with self.store.transaction() as tx:
            await tx.insert_memories(memories)
            await record_changes(tx, [Change("created", m) for m in memories], now)
        await self._written()
        self._observe("create", started)
        return memories

    async def _locate(self, tx: Transaction, flt: MemoryFilter, memory_id: str) -> Memory:
        where, params = flt.where("m")
        row = await tx.fetchone(
            f"SELECT {_COLUMNS} FROM memories m WHERE m.id = ? AND {where}", [memory_id, *params]
        )
        if row is None:
            raise MemoryNotFound(
                f"No memory {memory_id!r} that this token may see (it never existed, was "
                "deleted or expired, or belongs to another user)."
            )
        return memory_from_row(row)

    async def update(
        self,
        flt: MemoryFilter,
        memory_id: str,
        *,
        content: str | None = None,
        importance: float | None = None,
        metadata: dict[str, Any] | None = None,
        agent_id: str | None = None,
    ) -> Memory:
        self._check()
        started = time.perf_counter()
        now = now_ms()
        async with self.store.transaction() as tx:
            current = await self._locate(tx, flt, memory_id)
            changes: dict[str, Any] = {}
            if content is not None and content != current.content:
                changes["content"] = content
                changes["hash"] = content_hash(content)
                if current.memory_type == "semantic":
                    changes["embedding"] = pack(self._sparse.embed(content))
            if importance is not None and importance != current.importance:
                changes["importance"] = importance
            if metadata is not None:
                merged = dict(current.metadata)
                for key, value in metadata.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                if merged != current.metadata:
                    changes["metadata"] = merged
            if agent_id is not None and agent_id != current.agent_id:
                changes["agent_id"] = agent_id
            if not changes:
                return current
            updated = msgspec.structs.replace(
                current, version=current.version + 1, updated_at=now, source=None, **changes
            )
            await tx.update_memory(updated)
            await record_changes(tx, [Change("updated", updated)], now)
        await self._written()
        self._observe("update", started)
        return updated

    async def delete(self, flt: MemoryFilter, memory_ids: Sequence[str]) -> list[str | None]:
        """Delete the memories the filter admits; per id, the id deleted or ``None``
        (not found for this caller). One transaction."""
        self._check()
        started = time.perf_counter()
        now = now_ms()
        results: list[str | None] = []
        changes: list[Change] = []
        async with self.store.transaction() as tx:
            for memory_id in memory_ids:
                try:
                    memory = await self._locate(tx, flt, memory_id)
                except MemoryNotFound:
                    results.append(None)
                    continue
                await tx.delete_memory(memory.id)
                gone = msgspec.structs.replace(memory, updated_at=now, source=None)
                changes.append(Change("deleted", gone))
                results.append(memory.id)
            await record_changes(tx, changes, now)
        if changes:
            await self._written()
        self._observe("delete", started)
        return results

    async def _written(self) -> None:
        """After a write: wake the outbox publisher (when the pipeline runs here) and
        index the change, so it is searchable by vector when the write is answered."""
        if self.pipeline is not None:
            self.pipeline.worker.publisher.wake()
        if self.indexer is not None:
            try:
                await self.indexer.catch_up()
            except Exception as exc:
                # The write is durable; the indexer's loop retries the index.
                logger.warning("vector_index_deferred", error=str(exc))
                self.indexer.wake()

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, flt: MemoryFilter, memory_id: str) -> Memory:
        self._check()
        started = time.perf_counter()
        found = await filters.fetch_ids(self.store, flt, [memory_id])
        self._observe("get", started)
        memory = found.get(memory_id)
        if memory is None:
            raise MemoryNotFound(
                f"No memory {memory_id!r} that this token may see (it never existed, was "
                "deleted or expired, or belongs to another user)."
            )
        return memory

    async def page(self, flt: MemoryFilter, limit: int, cursor: str | None) -> Page:
        self._check()
        started = time.perf_counter()
        page = await filters.select(self.store, flt, limit=limit, cursor=cursor)
        self._observe("list", started)
        return page

    async def history(self, flt: MemoryFilter, memory_id: str) -> list[MemoryVersion]:
        self._check()
        versions = await filters.history(self.store, flt, memory_id)
        if not versions:
            raise MemoryNotFound(f"No history for memory {memory_id!r} that this token may see.")
        return versions

    # -- search ----------------------------------------------------------------------------------

    async def search(
        self, flt: MemoryFilter, query: str, *, limit: int, threshold: float | None = None
    ) -> list[Hit]:
        self._check()
        started = time.perf_counter()
        depth = max(50, limit * 5)
        terms = await self._terms.selective(filters.query_terms(query))
        keyword = await filters.keyword_candidates(self.store, flt, terms, depth)
        vector: list[tuple[str, float]] = []
        if self.index is not None and self.embedder is not None:
            embedder = self.embedder
            if self.index.in_process and embedder.name.startswith("hashed"):
                # Microseconds, and the search itself runs here: no thread hop.
                qvec = embedder.embed([query])[0]
            else:
                qvec = (await asyncio.to_thread(embedder.embed, [query]))[0]
            try:
                hits = await self.index.search(qvec, flt, depth)
            except Exception as exc:
                logger.warning("vector_search_failed", error=str(exc))
                hits = []
            vector = [(i, s) for i, s in hits if s >= embedder.min_similarity]
        fused: dict[str, float] = {}
        keyword_rank: dict[str, int] = {}
        vector_rank: dict[str, int] = {}
        similarity: dict[str, float] = {}
        for rank, (memory_id, _) in enumerate(keyword, start=1):
            keyword_rank[memory_id] = rank
            fused[memory_id] = fused.get(memory_id, 0.0) + 1.0 / (RRF_K + rank)
        for rank, (memory_id, score) in enumerate(vector, start=1):
            vector_rank[memory_id] = rank
            similarity[memory_id] = score
            fused[memory_id] = fused.get(memory_id, 0.0) + 1.0 / (RRF_K + rank)
        if not fused:
            self._observe("search", started)
            return []
        best = 2.0 / (RRF_K + 1)
        # Hydrated from SQLite with the same filter: tenancy is checked on every hit again.
        memories = await filters.fetch_ids(self.store, flt, list(fused))
        now = now_ms()
        hits_out: list[Hit] = []
        for memory_id, rrf in fused.items():
            memory = memories.get(memory_id)
            if memory is None:
                continue
            relevance = rrf / best
            age_days = max(0.0, (now - memory.updated_at) / DAY_MS)
            recency = 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)
            score = relevance * (
                WEIGHT_BASE + WEIGHT_RECENCY * recency + WEIGHT_IMPORTANCE * memory.importance
            )
            if threshold is not None and score < threshold:
                continue
            hits_out.append(
                Hit(
                    memory=memory,
                    score=score,
                    relevance=relevance,
                    recency=recency,
                    importance=memory.importance,
                    keyword_rank=keyword_rank.get(memory_id),
                    vector_rank=vector_rank.get(memory_id),
                    similarity=similarity.get(memory_id),
                )
            )
        hits_out.sort(key=lambda h: (-h.score, h.memory.id))
        self._observe("search", started)
        return hits_out[:limit]
