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
from agents.embedding import HashedNgramEmbedder, SparseVector, cosine, pack, unpack
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
FACT_CACHE = 50_000
"""Facts kept by the apply process's fact cache, over all users; emptied when full."""


class _Facts:
    """One user's most recently updated facts (at most ``semantic_candidates``), as its
    connection sees them, least recent first; ``complete`` when the user has no other."""

    __slots__ = ("by_id", "complete")

    def __init__(self, memories: Sequence[Memory], complete: bool) -> None:
        self.by_id = {m.id: m for m in memories}
        self.complete = complete

    def by_hash(self, hash_: str) -> Memory | None:
        return next((m for m in self.by_id.values() if m.hash == hash_), None)

    def by_subject(self, subject: str) -> Memory | None:
        return next((m for m in reversed(self.by_id.values()) if m.subject == subject), None)

    def put(self, memory: Memory, limit: int) -> None:
        self.by_id.pop(memory.id, None)
        self.by_id[memory.id] = memory
        if len(self.by_id) > limit:
            del self.by_id[next(iter(self.by_id))]
            self.complete = False


class SemanticAgent(MemoryAgent):
    memory_type = "semantic"

    def __init__(
        self,
        config: PipelineConfig,
        store: MemoryStore,
        embedder: HashedNgramEmbedder | None = None,
        *,
        cache_facts: bool = False,
    ) -> None:
        super().__init__(config, store)
        self.embedder = embedder or HashedNgramEmbedder()
        self._embedded: dict[str, tuple[SparseVector, bytes]] = {}
        """Embeddings of the batch about to be applied (``prepare``), by content."""
        self._vectors: dict[bytes, SparseVector] = {}
        """Decoded embeddings by their stored bytes: the same recent facts are compared
        with every new fact of their user."""
        self._facts: dict[tuple[str, str], _Facts] | None = {} if cache_facts else None
        """With ``cache_facts`` (the apply process, the only connection that writes facts
        while the pipeline runs): each user's recent facts, so that a new fact costs no
        lookups. Emptied whenever another connection committed (``PRAGMA
        data_version``), the transaction rolled back (``forget``), or it is full."""
        self._cached = 0
        self._data_version: int | None = None

    def prepare(self, items: Sequence[MemoryWork]) -> dict[str, bytes]:
        # Embedding is pure CPU: done here, it runs while the writer is in SQLite.
        # Only the coming batch is kept; an entry not used is computed again if needed.
        embedded = {}
        for item in items:
            vector = self.embedder.embed(item.content)
            embedded[item.content] = (vector, pack(vector))
        self._embedded = embedded
        return {content: packed for content, (_, packed) in embedded.items()}

    def adopt(self, prepared: dict[str, bytes]) -> None:
        self._embedded = {content: (unpack(packed), packed) for content, packed in prepared.items()}

    def forget(self) -> None:
        if self._facts is not None:
            self._facts.clear()
            self._cached = 0

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
        facts = self._user_facts(tx, org, user)
        hash_ = content_hash(item.content)
        if facts is not None and facts.complete:
            same = facts.by_hash(hash_)
        else:
            same = tx.by_hash(organization_id=org, user_id=user, memory_type="semantic", hash=hash_)
        if same is not None:
            return [self._update(tx, self._reinforce(same, item, now, source), facts)]
        embedded = self._embedded.pop(item.content, None)
        if embedded is None:
            vector = self.embedder.embed(item.content)
            embedded = (vector, pack(vector))
        vector, packed = embedded
        if item.subject:
            if facts is not None and facts.complete:
                slot = facts.by_subject(item.subject)
            else:
                slot = tx.by_subject(
                    organization_id=org, user_id=user, memory_type="semantic", subject=item.subject
                )
            if slot is not None:
                merged = self._supersede(slot, item, packed, hash_, now, source, "subject")
                return [self._update(tx, merged, facts)]
        best, score = self._nearest(tx, item, vector, facts)
        if best is not None and score >= self.config.semantic_threshold:
            merged = self._supersede(best, item, packed, hash_, now, source, "similarity", score)
            return [self._update(tx, merged, facts)]
        memory = new_memory(
            item,
            # The hash too: one record may yield several facts (a core block's evicted lines).
            memory_id("semantic", org, str(item.source), hash_),
            now,
            hash=hash_,
            embedding=packed,
            memory_type="semantic",
            metadata={**memory_metadata(item), "mentions": 1},
            source=source,
        )
        tx.insert_memories([memory])
        if facts is not None:
            self._put(facts, memory)
        return [Change("created", memory)]

    def _user_facts(self, tx: Writes, org: str, user: str) -> _Facts | None:
        cache = self._facts
        if cache is None:
            return None
        version = tx.data_version()
        if version != self._data_version:
            self.forget()
            self._data_version = version
        facts = cache.get((org, user))
        if facts is None:
            limit = self.config.semantic_candidates
            recent = tx.recent_memories(
                organization_id=org, user_id=user, memory_type="semantic", limit=limit + 1
            )
            facts = _Facts(recent[:limit][::-1], len(recent) <= limit)
            if self._cached + len(facts.by_id) > FACT_CACHE:
                self.forget()
            cache[(org, user)] = facts
            self._cached += len(facts.by_id)
        return facts

    def _put(self, facts: _Facts, memory: Memory) -> None:
        before = len(facts.by_id)
        facts.put(memory, self.config.semantic_candidates)
        self._cached += len(facts.by_id) - before

    def _update(self, tx: Writes, memory: Memory, facts: _Facts | None) -> Change:
        tx.update_memory(memory)
        if facts is not None:
            self._put(facts, memory)
        return Change("updated", memory)

    def _vector(self, embedding: bytes | None) -> SparseVector:
        if not embedding:
            return {}
        vectors = self._vectors
        stored = vectors.get(embedding)
        if stored is None:
            if len(vectors) >= VECTOR_CACHE:
                vectors.clear()
            stored = vectors[embedding] = unpack(embedding)
        return stored

    def _nearest(
        self, tx: Writes, item: MemoryWork, vector: SparseVector, facts: _Facts | None
    ) -> tuple[Memory | None, float]:
        if not vector:
            return None, 0.0
        if facts is not None:
            best_memory: Memory | None = None
            best_score = 0.0
            # Most recent first: of equal scores, the most recent fact wins.
            for memory in reversed(facts.by_id.values()):
                score = cosine(vector, self._vector(memory.embedding))
                if score > best_score:
                    best_memory, best_score = memory, score
            return best_memory, best_score
        candidates = tx.recent_embeddings(
            organization_id=item.organization_id,
            user_id=item.user_id,
            memory_type="semantic",
            limit=self.config.semantic_candidates,
        )
        best: str | None = None
        best_score = 0.0
        for candidate_id, embedding in candidates:
            score = cosine(vector, self._vector(embedding))
            if score > best_score:
                best, best_score = candidate_id, score
        if best is None:
            return None, 0.0
        found = tx.memory(
            organization_id=item.organization_id, user_id=item.user_id, memory_id=best
        )
        return found, best_score

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
        packed: bytes,
        hash_: str,
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
            hash=hash_,
            embedding=packed,
            subject=item.subject or memory.subject,
            importance=max(memory.importance, item.importance),
            agent_id=item.agent_id or memory.agent_id,
            metadata=metadata,
            event_time=item.timestamp,
            source=source,
        )
