"""The semantic agent: facts and preferences, deduplicated, superseded by newer versions.

For a new fact of a user, in order:

1. **exact duplicate** (same normalized text, ``content_hash``): the stored fact is
   reinforced: one more mention, the higher importance, a new version;
2. **same subject** (a slot such as "favourite colour" recognized by the classifier): the
   new statement supersedes the stored one;
3. **near duplicate**: the most similar of the user's ``semantic_candidates`` most recent
   facts, when its cosine similarity (``agents.embedding``) reaches
   ``semantic_threshold``, is superseded by the new statement;
4. otherwise a new fact.

Superseding keeps the memory's id and raises its version; every earlier version stays in
``memory_history``. Nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.config import PipelineConfig
from agents.embedding import HashedNgramEmbedder, cosine, pack, unpack
from agents.memory.base import (
    Applied,
    MemoryAgent,
    content_hash,
    memory_id,
    memory_metadata,
    new_memory,
    next_version,
)
from agents.store.sqlite import Change, Memory, MemoryStore, Writes
from agents.work import MemoryWork, Source

VECTOR_CACHE = 4_096
"""Decoded embeddings kept (about 5 KB each); the cache is emptied when full."""


class SemanticAgent(MemoryAgent):
    memory_type = "semantic"

    def __init__(
        self,
        config: PipelineConfig,
        store: MemoryStore,
        embedder: HashedNgramEmbedder | None = None,
    ) -> None:
        super().__init__(config, store)
        self.embedder = embedder or HashedNgramEmbedder()
        self._embedded: dict[str, dict[int, float]] = {}
        """Embeddings of the batch about to be applied (``prepare``), by content."""
        self._vectors: dict[bytes, dict[int, float]] = {}
        """Decoded embeddings by their stored bytes: the same recent facts are compared
        with every new fact of their user."""

    def prepare(self, items: Sequence[MemoryWork]) -> None:
        # Embedding is pure CPU: done here, it runs while the writer thread is in SQLite.
        # Only the coming batch is kept; an entry not used is computed again if needed.
        embedded = {item.content: self.embedder.embed(item.content) for item in items}
        self._embedded = embedded

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        # One at a time: each fact is compared with the facts stored before it.
        return [(item, self.remember(tx, item, now)) for item in items]

    def remember(
        self, tx: Writes, item: MemoryWork, now: int, *, from_log: bool = True
    ) -> list[Change]:
        """Store one fact (see the module docstring for the dedup rules). ``from_log``
        False: the fact comes from an edit, not a record; no source is stored."""
        source = item.source if from_log else None
        org, user = item.organization_id, item.user_id
        hash_ = content_hash(item.content)
        same = tx.by_hash(organization_id=org, user_id=user, memory_type="semantic", hash=hash_)
        if same is not None:
            return [self._update(tx, self._reinforce(same, item, now, source))]
        vector = self._embedded.pop(item.content, None)
        if vector is None:
            vector = self.embedder.embed(item.content)
        if item.subject:
            slot = tx.by_subject(
                organization_id=org, user_id=user, memory_type="semantic", subject=item.subject
            )
            if slot is not None:
                return [
                    self._update(tx, self._supersede(slot, item, vector, now, source, "subject"))
                ]
        best, score = self._nearest(tx, item, vector)
        if best is not None and score >= self.config.semantic_threshold:
            merged = self._supersede(best, item, vector, now, source, "similarity", score)
            return [self._update(tx, merged)]
        memory = new_memory(
            item,
            # The hash too: one record may yield several facts (a core block's evicted lines).
            memory_id("semantic", org, str(item.source), hash_),
            now,
            hash=hash_,
            embedding=pack(vector),
            memory_type="semantic",
            metadata={**memory_metadata(item), "mentions": 1},
            source=source,
        )
        tx.insert_memories([memory])
        return [Change("created", memory)]

    @staticmethod
    def _update(tx: Writes, memory: Memory) -> Change:
        tx.update_memory(memory)
        return Change("updated", memory)

    def _nearest(
        self, tx: Writes, item: MemoryWork, vector: dict[int, float]
    ) -> tuple[Memory | None, float]:
        if not vector:
            return None, 0.0
        candidates = tx.recent_embeddings(
            organization_id=item.organization_id,
            user_id=item.user_id,
            memory_type="semantic",
            limit=self.config.semantic_candidates,
        )
        best: str | None = None
        best_score = 0.0
        vectors = self._vectors
        for candidate_id, embedding in candidates:
            stored = vectors.get(embedding) if embedding else None
            if stored is None:
                stored = unpack(embedding)
                if embedding:
                    if len(vectors) >= VECTOR_CACHE:
                        vectors.clear()
                    vectors[embedding] = stored
            score = cosine(vector, stored)
            if score > best_score:
                best, best_score = candidate_id, score
        if best is None:
            return None, 0.0
        memory = tx.memory(
            organization_id=item.organization_id, user_id=item.user_id, memory_id=best
        )
        return memory, best_score

    def _reinforce(
        self, memory: Memory, item: MemoryWork, now: int, source: Source | None
    ) -> Memory:
        metadata = dict(memory.metadata)
        metadata["mentions"] = int(metadata.get("mentions", 1)) + 1
        metadata["last_event_id"] = item.event_id
        return next_version(
            memory,
            now,
            importance=max(memory.importance, item.importance),
            metadata=metadata,
            event_time=item.timestamp,
            source=source,
        )

    def _supersede(
        self,
        memory: Memory,
        item: MemoryWork,
        vector: dict[int, float],
        now: int,
        source: Source | None,
        reason: str,
        similarity: float | None = None,
    ) -> Memory:
        metadata: dict[str, Any] = memory_metadata(item)
        metadata["mentions"] = int(memory.metadata.get("mentions", 1)) + 1
        metadata["supersedes_version"] = memory.version
        metadata["superseded_by"] = reason
        if similarity is not None:
            metadata["similarity"] = round(similarity, 4)
        return next_version(
            memory,
            now,
            content=item.content,
            hash=content_hash(item.content),
            embedding=pack(vector),
            subject=item.subject or memory.subject,
            importance=max(memory.importance, item.importance),
            agent_id=item.agent_id or memory.agent_id,
            metadata=metadata,
            event_time=item.timestamp,
            source=source,
        )
