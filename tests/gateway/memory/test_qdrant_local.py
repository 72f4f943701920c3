"""Qdrant local mode, the default vector index, on real files.

Its searches are answered by in-process matrices kept in step with the local collection;
these tests hold them to the collection's own answer (qdrant-client's filtered search
over the same files), to the tenancy, and to what survives a restart and a kill -9.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from agents.store.filters import MemoryFilter
from agents.store.sqlite import now_ms
from gateway.memory.collection import (
    VectorIndexMismatch,
    VectorIndexUnavailable,
    collection_name,
)
from gateway.memory.embedders import HashedEmbedder
from gateway.memory.qdrant_local import local_points, scroll_points
from gateway.memory.service import Draft, MemoryService
from gateway.memory.vectors import QdrantIndex, VectorPoint, qdrant_filter
from gateway.settings import Settings

MODEL, DIM = "test-model", 32
DAY = 86_400_000


def corpus(seed: int = 7) -> tuple[list[VectorPoint], np.ndarray]:
    """3 organizations x 4 users x 25 memories, every field varied; random unit vectors."""
    rng = np.random.default_rng(seed)
    now = now_ms()
    points = []
    for i in range(300):
        points.append(
            VectorPoint(
                memory_id=f"m{i:03d}",
                organization_id=f"o{i % 3}",
                user_id=f"u{(i // 3) % 4}",
                agent_id=("a1", "a2", None)[i % 3 - 1 if i % 5 else 2],
                session_id=f"s{i % 2}" if i % 4 else None,
                memory_type=("semantic", "episodic", "procedural")[i % 3 if i % 7 else 1],
                importance=round(float(rng.random()), 3),
                created_at=1_000 + i,
                # Some long expired, some far in the future, most never.
                expires_at=(1, now + DAY, None, None)[i % 4],
            )
        )
    vectors = rng.standard_normal((len(points), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return points, vectors


FILTERS = [
    MemoryFilter.for_user("o0", "u0"),
    MemoryFilter.for_user("o1", "u3"),
    MemoryFilter.organization_wide("o2"),
    MemoryFilter.for_user("o0", "u1", memory_types=("episodic",)),
    MemoryFilter.for_user("o1", "u2", agent_id="a1"),
    MemoryFilter.for_user("o2", "u0", session_id="s1", min_importance=0.3),
    MemoryFilter.organization_wide("o0", created_after=1_100, created_before=1_250),
    MemoryFilter.for_user("o0", "u0", include_expired=True),
    MemoryFilter.for_user("o9", "u0"),
    MemoryFilter.for_user("o0", "nobody"),
]


def collection_answer(path: Path, query: np.ndarray, flt: MemoryFilter) -> list[tuple[str, float]]:
    """qdrant-client's own filtered search over the collection's files."""
    client = QdrantClient(path=str(path))
    try:
        response = client.query_points(
            collection_name(MODEL),
            query=query.tolist(),
            query_filter=qdrant_filter(flt),
            limit=10,
            with_payload=["memory_id"],
        )
    finally:
        client.close()
    return [(str(p.payload["memory_id"]), float(p.score)) for p in response.points]


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [m for m, _ in got] == [m for m, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


async def test_searches_answer_like_the_collection_before_and_after_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "qdrant"
    index = QdrantIndex(MODEL, DIM, path=path)
    assert await index.open() is True
    points, vectors = corpus()
    for start in range(0, len(points), 64):
        await index.upsert(points[start : start + 64], vectors[start : start + 64])
    # Deleted, and moved to another user and organization (same memory id).
    await index.delete(["m000", "m010", "m011", "missing"])
    moved = [
        VectorPoint(**{**_fields(points[3]), "organization_id": "o1", "user_id": "u3"}),
        VectorPoint(**{**_fields(points[4]), "user_id": "u0", "expires_at": None}),
    ]
    await index.upsert(moved, vectors[[3, 4]])
    queries = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    before = {
        (q, f): await index.search(queries[q], flt, 10)
        for q in range(len(queries))
        for f, flt in enumerate(FILTERS)
    }
    assert await index.count() == 297
    # The moved memory is found by its own vector at its new owner's only.
    assert (await index.search(vectors[3], MemoryFilter.for_user("o1", "u3"), 1))[0][0] == "m003"
    old_owner = await index.search(vectors[3], MemoryFilter.organization_wide("o0"), 300)
    assert "m003" not in {m for m, _ in old_owner} and len(old_owner) > 50
    await index.close()

    for (q, f), hits in before.items():
        assert_same(hits, collection_answer(path, queries[q], FILTERS[f]))

    # Restart: the matrices are rebuilt from the collection, with the same answers.
    again = QdrantIndex(MODEL, DIM, path=path)
    assert await again.open() is False
    assert await again.count() == 297
    for (q, f), hits in before.items():
        assert_same(await again.search(queries[q], FILTERS[f], 10), hits)
    await again.close()


def _fields(point: VectorPoint) -> dict[str, object]:
    return {f: getattr(point, f) for f in point.__struct_fields__}


async def test_tenants_never_see_each_other(tmp_path: Path) -> None:
    """The same text for two users of one organization and a user of another: each
    search returns its own memory only, also after a memory changes hands and a restart."""
    embedder = HashedEmbedder()
    index = QdrantIndex(embedder.name, embedder.dim, path=tmp_path / "qdrant")
    await index.open()
    owners = {"a": ("o1", "alice"), "b": ("o1", "bob"), "c": ("o2", "alice")}

    def point(memory_id: str, org: str, user: str) -> VectorPoint:
        return VectorPoint(
            memory_id=memory_id, organization_id=org, user_id=user, agent_id=None,
            session_id=None, memory_type="semantic", importance=0.5, created_at=1,
            expires_at=None,
        )  # fmt: skip

    text = "the spare key is under the green flowerpot"
    items = [point(m, org, user) for m, (org, user) in owners.items()]
    await index.upsert(items, embedder.embed([text] * len(items)))
    query = embedder.embed(["spare key flowerpot"])[0]

    async def ids(flt: MemoryFilter) -> list[str]:
        return sorted(m for m, _ in await index.search(query, flt, 10))

    assert await ids(MemoryFilter.for_user("o1", "alice")) == ["a"]
    assert await ids(MemoryFilter.for_user("o1", "bob")) == ["b"]
    assert await ids(MemoryFilter.for_user("o2", "alice")) == ["c"]
    assert await ids(MemoryFilter.organization_wide("o1")) == ["a", "b"]
    assert await ids(MemoryFilter.organization_wide("o3")) == []

    # Bob's memory passes to Carol: Bob no longer finds it, Carol does.
    await index.upsert([point("b", "o1", "carol")], embedder.embed([text]))
    assert await ids(MemoryFilter.for_user("o1", "bob")) == []
    assert await ids(MemoryFilter.for_user("o1", "carol")) == ["b"]
    await index.close()

    again = QdrantIndex(embedder.name, embedder.dim, path=tmp_path / "qdrant")
    await again.open()
    index = again
    assert await ids(MemoryFilter.for_user("o1", "alice")) == ["a"]
    assert await ids(MemoryFilter.for_user("o1", "bob")) == []
    assert await ids(MemoryFilter.for_user("o1", "carol")) == ["b"]
    assert await ids(MemoryFilter.for_user("o2", "alice")) == ["c"]
    await again.close()


async def test_reading_back_through_scroll_loads_the_same_points(tmp_path: Path) -> None:
    """Two ways to fill the matrices at open (qdrant-client's arrays, or ``scroll`` when
    they are laid out otherwise) give the same points and vectors."""
    index = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await index.open()
    points, vectors = corpus(3)
    await index.upsert(points[:120], vectors[:120])
    await index.delete([p.memory_id for p in points[:120:7]])
    await index.close()

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        arrays = local_points(client, collection_name(MODEL), DIM)
        assert arrays is not None
        scrolled = list(scroll_points(client, collection_name(MODEL)))
    finally:
        client.close()

    by_id = {p["memory_id"]: (p, v) for p, v in zip(arrays[0], arrays[1], strict=True)}
    rows = [(p, v) for payloads, vecs in scrolled for p, v in zip(payloads, vecs, strict=True)]
    assert len(by_id) == len(rows) == 120 - len(points[:120:7])
    for payload, vector in rows:
        assert by_id[payload["memory_id"]][0] == payload
        assert np.allclose(by_id[payload["memory_id"]][1], vector, atol=1e-6)


def open_when_free(path: Path, timeout: float = 10.0) -> QdrantClient:
    """A client on ``path`` once no process holds local mode's lock on it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return QdrantClient(path=str(path))
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("killed", ["gateway", "gateway and its Qdrant process"])
def test_writes_use_the_write_ahead_log_and_survive_kill_9(tmp_path: Path, killed: str) -> None:
    """An upsert that returned is on disk: the process that made it (and its Qdrant
    process) is killed with SIGKILL right after it, and a new process finds every point.
    Killed alone, the gateway's Qdrant process ends by itself and frees the directory."""
    path = tmp_path / "qdrant"
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        import numpy as np
        from gateway.memory.vectors import QdrantIndex
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_qdrant_local import corpus

        async def main():
            index = QdrantIndex({MODEL!r}, {DIM}, path=__import__("pathlib").Path({str(path)!r}))
            await index.open()
            points, vectors = corpus()
            await index.upsert(points[:200], vectors[:200])
            await index.delete(["m001"])
            print("written", index.process.pid, flush=True)
            time.sleep(60)

        asyncio.run(main())
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
        text=True,
    )
    try:
        assert child.stdout is not None
        # The script's log lines come first.
        line = next(line for line in child.stdout if line.startswith("written"))
        pid = line.split()[1]
        if killed != "gateway":
            os.kill(int(pid), signal.SIGKILL)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)

    storage = path / "collection" / collection_name(MODEL) / "storage.sqlite"
    db = sqlite3.connect(storage)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    client = open_when_free(path)
    try:
        assert client.count(collection_name(MODEL), exact=True).count == 199
    finally:
        client.close()


async def test_a_killed_qdrant_process_fails_one_write_and_is_replaced(tmp_path: Path) -> None:
    """The write in flight when local mode's process dies fails as unavailable (the
    indexer retries it); the next write starts a new process, the searches never stop,
    and nothing written is lost."""
    index = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await index.open()
    points, vectors = corpus()
    await index.upsert(points[:100], vectors[:100])
    first = index.process
    assert first is not None and first.pid is not None
    old_pid = first.pid
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(VectorIndexUnavailable, match="exited"):
        await index.upsert(points[100:200], vectors[100:200])
    # Searches are answered from the gateway's copy meanwhile.
    assert (await index.search(vectors[5], MemoryFilter.organization_wide("o2"), 1))[0][0] == "m005"
    await index.upsert(points[100:200], vectors[100:200])
    await index.delete(["m001"])
    assert first.pid != old_pid and first.restarts == 1
    assert await index.count() == 199
    await index.close()

    again = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await again.open()
    assert await again.count() == 199
    hits = await again.search(vectors[150], MemoryFilter.for_user("o0", points[150].user_id), 1)
    assert hits[0][0] == "m150"
    await again.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_the_qdrant_process_leaves_signals_to_the_gateway(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A Ctrl-C or a service manager's stop reaches the process group: the Qdrant process
    ignores it, so the draining gateway can still write; closing the index ends it."""
    index = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await index.open()
    process = index.process
    assert process is not None and process.pid is not None
    pid = process.pid
    os.kill(pid, sig)
    points, vectors = corpus()
    await index.upsert(points[:10], vectors[:10])
    assert process.pid == pid and process.restarts == 0
    await index.close()
    open_when_free(tmp_path / "qdrant").close()


async def test_a_directory_in_use_is_refused_with_the_reason(tmp_path: Path) -> None:
    index = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await index.open()
    other = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    with pytest.raises(VectorIndexUnavailable, match="Another process uses it"):
        await other.open()
    await index.close()


async def test_a_collection_of_another_model_is_refused(tmp_path: Path) -> None:
    index = QdrantIndex(MODEL, DIM, path=tmp_path / "qdrant")
    await index.open()
    await index.close()
    other = QdrantIndex(MODEL, DIM * 2, path=tmp_path / "qdrant")
    with pytest.raises(VectorIndexMismatch, match=f"dimension {DIM}"):
        await other.open()
    # The refused process let the directory go.
    open_when_free(tmp_path / "qdrant").close()


@pytest.mark.parametrize("vectors", ["qdrant", "exact"])
async def test_service_search_after_a_restart_uses_the_stored_vectors(
    tmp_path: Path, vectors: str
) -> None:
    """The default configuration end to end: a misspelt query finds a memory by vector
    only, for its owner only; after a restart the same, with nothing embedded again."""
    settings = Settings(data_dir=tmp_path, memory_pipeline="off")
    service = MemoryService(settings, vectors=vectors)
    await service.open()
    assert service.index is not None and service.index.backend == vectors
    drafts = [
        Draft(organization_id="o1", user_id=user, content=content, memory_type="semantic",
              importance=0.5)
        for user in ("alice", "bob")
        for content in ("I drink green tea every morning", "The boat is moored at pier seven")
    ]  # fmt: skip
    made = await service.create(drafts)
    alices = {m.id for m in made if m.user_id == "alice"}

    async def search() -> list[str]:
        hits = await service.search(
            MemoryFilter.for_user("o1", "alice"), "the bot mored at peir sevn", limit=5
        )
        assert all(h.vector_rank is not None and h.keyword_rank is None for h in hits)
        return [h.memory.id for h in hits]

    first = await search()
    assert len(first) == 1 and first[0] in alices
    await service.close()

    service = MemoryService(settings, vectors=vectors)
    await service.open()
    assert service.indexer is not None and service.index is not None
    assert await service.index.count() == 4
    assert await search() == first
    await service.indexer.catch_up()
    assert service.indexer.stats.indexed == 0
    await service.close()
