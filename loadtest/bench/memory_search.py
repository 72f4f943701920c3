"""Memory search benchmark: hybrid search latency at 100,000 memories.

    python -m loadtest.bench.memory_search [--memories 100000] [--users 100]
        [--queries 400] [--warmup 1000] [--vectors qdrant,exact]
        [--out loadtest/results/memory.json]

``MemoryService.search`` in process (no HTTP) over ``--memories``
   synthetic memories of ``--users`` users of one organization, default (hashed)
   embedder. Every backend of ``--vectors`` in turn over the same memories and queries:
   the default configuration (Qdrant local mode) first, ``exact`` beside it. Per backend:
   index rate (embedding and vector writes apart), open time after a restart, then
   per-user queries (the common case) and organization-wide queries (an admin token:
   the vector leg scans every memory), p50/p99 and recall@10 each. Beside them, as the
   reference, one raw ``sqlite3`` FTS5 query per search over the same database.

The pipeline's throughput and update latency are measured by ``memory_pipeline``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.memory.base import content_hash
from agents.runner import memory_database_path
from agents.store.filters import MemoryFilter
from agents.store.sqlite import Change, Memory, MemoryStore, now_ms
from gateway.memory.service import MemoryService
from gateway.settings import Settings
from loadtest.bench.report import machine, percentile, print_table, write_json

ORG = "bench"


def vocabulary(size: int, rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "re", "su", "ta", "ve", "no", "pi", "dra", "sel", "mon",
                 "tri", "gan", "fe", "lu", "bor", "cin", "dal", "er"]  # fmt: skip
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def sentences(count: int, words: list[str], rng: random.Random) -> list[str]:
    # Zipf-like word frequencies, 8 to 14 words per memory.
    weights = [1 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(8, 14))) for _ in range(count)]


async def populate(data_dir: Path, texts: list[str], users: int) -> None:
    store = MemoryStore(memory_database_path(data_dir))
    await store.open()
    now = now_ms()
    for start in range(0, len(texts), 5_000):
        memories = [
            Memory(
                id=f"mem_{i:024x}",
                organization_id=ORG,
                user_id=f"u{i % users}",
                memory_type="semantic" if i % 3 == 0 else "episodic",
                content=text,
                importance=(i % 10) / 10,
                hash=content_hash(text),
                # Spread over the last 90 days, so recency matters.
                created_at=now - (i * 7919 % 90) * 86_400_000,
                updated_at=now - (i * 7919 % 90) * 86_400_000,
            )
            for i, text in enumerate(texts[start : start + 5_000], start=start)
        ]
        async with store.transaction() as tx:
            await tx.insert_memories(memories)
            await tx.record_history([Change("created", m) for m in memories], now)
    await store.close()


async def search_run(
    backends: Sequence[str], count: int, users: int, queries: int, warmup: int, seed: int
) -> list[dict[str, Any]]:
    """One corpus of ``count`` memories, then each vector backend over it in turn (the
    same memories, the same queries): index rates, open time after a restart, per-scope
    latency and recall."""
    rng = random.Random(seed)
    words = vocabulary(3_000, rng)
    texts = sentences(count, words, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        await populate(data_dir, texts, users)
        insert_per_s = count / (time.perf_counter() - started)
        for vectors in backends:
            result = await backend_run(data_dir, vectors, texts, users, queries, warmup, seed)
            rows.append({"insert_per_s": insert_per_s, **result})
        rows.append(reference_run(data_dir, texts, users, queries, seed))
    return rows


def reference_run(
    data_dir: Path, texts: list[str], users: int, queries: int, seed: int
) -> dict[str, Any]:
    """The reference beside the service: one FTS5 keyword query per search (the same three
    words, restricted to the user) straight from ``sqlite3``, with no vector leg, fusion
    or hydration, and no pruning of common terms either (which the service does, so it can
    be faster than this)."""
    rng = random.Random(seed + 1)
    db = sqlite3.connect(memory_database_path(data_dir))
    count = len(texts)
    latencies = []
    hits = 0
    try:
        for _ in range(queries):
            i = rng.randrange(count)
            words = rng.sample(texts[i].split(), 3)
            expression = " OR ".join(f'"{w}"' for w in words)
            t0 = time.perf_counter()
            found = db.execute(
                "SELECT m.id FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid "
                "WHERE memories_fts MATCH ? AND m.organization_id = ? AND m.user_id = ? "
                "ORDER BY bm25(memories_fts) LIMIT 10",
                (expression, ORG, f"u{i % users}"),
            ).fetchall()
            latencies.append((time.perf_counter() - t0) * 1000)
            hits += any(row[0] == f"mem_{i:024x}" for row in found)
    finally:
        db.close()
    return {
        "label": "reference: raw sqlite3 FTS5 query",
        "memories": count,
        "users": users,
        "user_p50_ms": percentile(latencies, 50),
        "user_p99_ms": percentile(latencies, 99),
        "user_recall_at_10": hits / queries,
    }


async def backend_run(
    data_dir: Path,
    vectors: str,
    texts: list[str],
    users: int,
    queries: int,
    warmup: int,
    seed: int,
) -> dict[str, Any]:
    count = len(texts)
    settings = Settings(data_dir=data_dir, memory_pipeline="off")
    service = MemoryService(settings, vectors=vectors)
    await service.open()
    assert service.indexer is not None and service.index is not None, service.vector_error
    started = time.perf_counter()
    await service.indexer.catch_up()
    index_s = time.perf_counter() - started
    stats = service.indexer.stats
    result: dict[str, Any] = {
        "label": LABELS.get(vectors, vectors),
        "memories": count,
        "users": users,
        "index_per_s": count / index_s,
        "embed_per_s": stats.indexed / stats.embed_s if stats.embed_s else None,
        "vector_writes_per_s": stats.indexed / stats.write_s if stats.write_s else None,
    }
    # A restart: the index is read back from its files (Qdrant local mode: the collection
    # into qdrant-client, then into the search matrices).
    await service.close()
    service = MemoryService(settings, vectors=vectors)
    started = time.perf_counter()
    await service.open()
    result["reopen_s"] = time.perf_counter() - started
    assert service.index is not None, service.vector_error
    result["points_after_reopen"] = await service.index.count()

    rng = random.Random(seed + 1)

    def query_for(i: int) -> str:
        # Three words of an existing memory, as a user would half-remember it.
        return " ".join(rng.sample(texts[i].split(), 3))

    # Warm-up, not measured: the term statistics cache (document frequencies, kept
    # 5 minutes) fills as queries come; measured queries then see a warm cache.
    started = time.perf_counter()
    for _ in range(warmup):
        i = rng.randrange(count)
        await service.search(MemoryFilter.for_user(ORG, f"u{i % users}"), query_for(i), limit=10)
    result["warmup_ms_per_query"] = (time.perf_counter() - started) * 1000 / max(1, warmup)
    for scope in ("user", "org"):
        latencies = []
        hits = 0
        crossed = 0
        for _ in range(queries):
            i = rng.randrange(count)
            query = query_for(i)
            user = f"u{i % users}"
            flt = (
                MemoryFilter.for_user(ORG, user)
                if scope == "user"
                else MemoryFilter.organization_wide(ORG)
            )
            t0 = time.perf_counter()
            found = await service.search(flt, query, limit=10)
            latencies.append((time.perf_counter() - t0) * 1000)
            hits += any(h.memory.id == f"mem_{i:024x}" for h in found)
            if scope == "user":
                crossed += sum(h.memory.user_id != user for h in found)
        result[f"{scope}_p50_ms"] = percentile(latencies, 50)
        result[f"{scope}_p99_ms"] = percentile(latencies, 99)
        result[f"{scope}_recall_at_10"] = hits / queries
        if scope == "user":
            # Any hit of another user would be a tenancy breach: must stay 0.
            result["user_foreign_hits"] = crossed
    await service.close()
    return result


LABELS = {"qdrant": "qdrant local (default)", "exact": "exact"}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    backends = [b.strip() for b in args.vectors.split(",") if b.strip()]
    search = await search_run(
        backends, args.memories, args.users, args.queries, args.warmup, seed=1
    )
    print_table("hybrid search (in process, limit 10, hashed embedder)", search)
    return {"machine": machine(), "search": search}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument(
        "--vectors",
        default="qdrant,exact",
        help="vector backends to measure over the same corpus (the default first)",
    )
    parser.add_argument(
        "--search-only", action="store_true", help="accepted for older scripts; always so"
    )
    parser.add_argument("--out", default="loadtest/results/memory.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    write_json(
        args.out, {"command": "python -m loadtest.bench.memory_search", **vars(args), **results}
    )


if __name__ == "__main__":
    main()
