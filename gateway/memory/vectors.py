"""Vector indexes of memories: Qdrant (local mode or a server) and an exact in-process one.

One collection per embedding model: ``memories-<model>``. Its embedding model name and
dimension are recorded with it (Qdrant: the collection's metadata; exact: its ``meta``
table) and checked on every open: a collection made by another model or dimension is
refused with ``VectorIndexMismatch`` rather than searched with incomparable vectors.

Each point carries the memory's id and the fields the filter grammar
(``agents.store.filters.MemoryFilter``) tests: organization, user, agent, session, memory
type, importance, creation time, expiry. ``search`` applies the filter's tenancy and
fields in the index; the service hydrates the hits from SQLite with the same filter
again, so a stale point can never surface a memory the caller may not see.

- ``QdrantIndex`` (``qdrant``, the default) through ``qdrant-client``:

  - **server** (a URL is given): points are written to and searched by the server, with
    payload indexes on organization, user, agent, type, creation time and importance;
    the tenancy is a filter of every query.
  - **local mode** (the default: ``<data_dir>/qdrant``): qdrant-client's embedded mode is
    plain Python; it evaluates a query's payload filter point by point in Python (4 s a
    query at 100,000 points). So the local collection is the *durable copy* of the
    points, written on every change and read back at open, and queries are answered by
    ``TenantMatrices`` (``gateway.memory.matrices``), an in-process copy of the vectors
    per organization and user kept in step with it: a user's search multiplies that
    user's rows only. The collection itself is written by a child process
    (``gateway.memory.qdrant_local``): qdrant-client's writes are Python work that would
    hold this process's GIL. Memory: mostly qdrant-client's, in that process (it holds
    every point in Python objects, ~1.5 GiB at 100,000 points), plus ``dim * 4`` bytes a
    memory here for the matrices. One process at a time may open the directory.

- ``ExactIndex`` (``exact``): the same ``TenantMatrices``, persisted in a SQLite file of
  its own, ``<data_dir>/vectors/<collection>.sqlite3``; no Qdrant at all.

Writes block and run in a worker thread (``asyncio.to_thread``), one at a time.
Searches of the in-process matrices run on the event loop when they multiply fewer than
``INLINE_ROWS`` rows (about a millisecond), in a worker thread beyond.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from agents.store.filters import MemoryFilter
from agents.store.sqlite import now_ms
from gateway.memory.collection import (
    VectorIndexMismatch,
    VectorIndexUnavailable,
    check_collection,
    collection_metadata,
    collection_name,
    point_uuid,
)
from gateway.memory.matrices import TenantMatrices
from gateway.memory.qdrant_local import LocalQdrant

logger = structlog.get_logger(__name__)

INLINE_ROWS = 20_000
"""A product over this many rows takes about a millisecond: beyond, a worker thread."""


class VectorPoint(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    organization_id: str
    user_id: str
    agent_id: str | None
    session_id: str | None
    memory_type: str
    importance: float
    created_at: int
    expires_at: int | None


class VectorIndex(Protocol):
    backend: str
    collection: str
    model: str
    dim: int
    in_process: bool
    """Searches are NumPy work in this process (no I/O): callers may skip thread hops."""

    async def open(self) -> bool:
        """Open or create the collection; True when it was created now (empty)."""
        ...

    async def close(self) -> None: ...

    async def upsert(
        self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]
    ) -> None: ...

    async def delete(self, memory_ids: Sequence[str]) -> None: ...

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` ``(memory_id, cosine)`` admitted by ``flt``, best first."""
        ...

    async def count(self) -> int: ...


async def _search_matrices(
    matrices: TenantMatrices, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
) -> list[tuple[str, float]]:
    if not np.any(vector):
        return []
    rows = matrices.rows(flt)
    if rows == 0:
        return []
    if rows < INLINE_ROWS:
        return matrices.search(vector, flt, limit, now_ms())
    return await asyncio.to_thread(matrices.search, vector, flt, limit, now_ms())


# -- Qdrant --------------------------------------------------------------------------------------


class QdrantIndex:
    """A Qdrant collection: local mode at ``path`` (in a child process, see
    ``gateway.memory.qdrant_local``) or a server at ``url`` through ``qdrant-client``."""

    backend = "qdrant"

    def __init__(
        self,
        model: str,
        dim: int,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if (path is None) == (url is None):
            raise ValueError("give the Qdrant index either a local path or a server URL")
        self.model = model
        self.dim = dim
        self.path = path
        self.url = url
        self.api_key = api_key
        self.collection = collection_name(model)
        self.in_process = url is None
        # Local mode: the queries' copy of the points (the collection is the durable one).
        self._matrices = TenantMatrices(dim) if path is not None else None
        self._local = LocalQdrant(path, self.collection, model, dim) if path is not None else None
        self._client: Any = None
        self._open = False
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.url or str(self.path)

    @property
    def process(self) -> LocalQdrant | None:
        """Local mode's child process (``None`` with a server)."""
        return self._local

    async def open(self) -> bool:
        created = await asyncio.to_thread(self._open_sync)
        self._open = True
        return created

    def _open_sync(self) -> bool:
        if self._local is not None:
            return self._local.open(self._load)
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as exc:
            raise VectorIndexUnavailable(
                f"the qdrant vector index needs qdrant-client ({exc}): pip install qdrant-client"
            ) from None
        client = QdrantClient(url=self.url, api_key=self.api_key, timeout=10)
        try:
            if client.collection_exists(self.collection):
                config = client.get_collection(self.collection).config
                meta = config.metadata or {}
                size = getattr(config.params.vectors, "size", None)
                check_collection(
                    self.collection, self.where, meta.get("embedding_model"), size,
                    self.model, self.dim,
                )  # fmt: skip
                created = False
            else:
                client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(
                        size=self.dim, distance=models.Distance.COSINE
                    ),
                    metadata=collection_metadata(self.model, self.dim),
                )
                for field, schema in (
                    ("organization_id", models.PayloadSchemaType.KEYWORD),
                    ("user_id", models.PayloadSchemaType.KEYWORD),
                    ("agent_id", models.PayloadSchemaType.KEYWORD),
                    ("memory_type", models.PayloadSchemaType.KEYWORD),
                    ("created_at", models.PayloadSchemaType.INTEGER),
                    ("importance", models.PayloadSchemaType.FLOAT),
                ):
                    client.create_payload_index(self.collection, field, schema)
                created = True
        except VectorIndexMismatch:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise VectorIndexUnavailable(f"Qdrant at {self.where} failed: {exc}") from exc
        self._client = client
        return created

    def _load(self, payloads: list[Any], vectors: npt.NDArray[np.float32]) -> None:
        """Local mode: stored points from the child into the matrices."""
        assert self._matrices is not None
        try:
            points = [msgspec.convert(p, VectorPoint) for p in payloads]
        except msgspec.ValidationError as exc:
            raise VectorIndexUnavailable(
                f"collection {self.collection!r} in {self.where} holds a point that is not "
                f"a memory's ({exc}); delete the collection to rebuild it from the memory "
                "database"
            ) from None
        self._matrices.put_many(points, vectors)

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._local is not None:
            await asyncio.to_thread(self._locked, self._local.close)
        elif self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    def _check_open(self) -> None:
        if not self._open:
            raise VectorIndexUnavailable(f"the Qdrant index {self.collection} is not open")

    def _locked(self, call: Any, *args: Any) -> Any:
        with self._lock:
            return call(*args)

    async def upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        if not points:
            return
        self._check_open()
        await asyncio.to_thread(self._locked, self._upsert, points, vectors)

    def _upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        payloads = [msgspec.structs.asdict(p) for p in points]
        if self._local is not None:
            self._local.upsert([p.memory_id for p in points], vectors, payloads)
            # The matrices follow the durable copy only once it is written.
            assert self._matrices is not None
            self._matrices.put_many(points, vectors)
            return
        from qdrant_client import models

        batch = models.Batch(
            ids=[point_uuid(p.memory_id) for p in points],
            vectors=vectors.tolist(),
            payloads=payloads,
        )
        self._client.upsert(self.collection, batch, wait=True)

    async def delete(self, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        self._check_open()
        await asyncio.to_thread(self._locked, self._delete, memory_ids)

    def _delete(self, memory_ids: Sequence[str]) -> None:
        if self._local is not None:
            self._local.delete(memory_ids)
            assert self._matrices is not None
            self._matrices.remove_many(memory_ids)
            return
        from qdrant_client import models

        selector = models.PointIdsList(points=[point_uuid(m) for m in memory_ids])
        self._client.delete(self.collection, selector, wait=True)

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        self._check_open()
        if self._matrices is not None:
            return await _search_matrices(self._matrices, vector, flt, limit)
        if not np.any(vector):
            return []
        response = await asyncio.to_thread(
            self._locked, self._query, vector.tolist(), qdrant_filter(flt), limit
        )
        return [(str(p.payload["memory_id"]), float(p.score)) for p in response.points]

    def _query(self, vector: list[float], query_filter: Any, limit: int) -> Any:
        return self._client.query_points(
            self.collection,
            query=vector,
            query_filter=query_filter,
            limit=limit,
            with_payload=["memory_id"],
        )

    async def count(self) -> int:
        self._check_open()

        def count() -> int:
            if self._local is not None:
                return self._local.count()
            return int(self._client.count(self.collection, exact=True).count)

        return int(await asyncio.to_thread(self._locked, count))


def qdrant_filter(flt: MemoryFilter, now: int | None = None) -> Any:
    """``MemoryFilter`` as a Qdrant filter: the same fields, tenancy first."""
    from qdrant_client import models

    def match(key: str, value: Any) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    must: list[Any] = [match("organization_id", flt.organization_id)]
    if flt.user_id is not None:
        must.append(match("user_id", flt.user_id))
    if flt.agent_id is not None:
        must.append(match("agent_id", flt.agent_id))
    if flt.session_id is not None:
        must.append(match("session_id", flt.session_id))
    if flt.memory_types:
        must.append(
            models.FieldCondition(
                key="memory_type", match=models.MatchAny(any=[str(t) for t in flt.memory_types])
            )
        )
    if flt.min_importance is not None:
        must.append(
            models.FieldCondition(key="importance", range=models.Range(gte=flt.min_importance))
        )
    if flt.created_after is not None or flt.created_before is not None:
        must.append(
            models.FieldCondition(
                key="created_at",
                range=models.Range(gte=flt.created_after, lt=flt.created_before),
            )
        )
    if not flt.include_expired:
        must.append(
            models.Filter(
                should=[
                    models.IsNullCondition(is_null=models.PayloadField(key="expires_at")),
                    models.FieldCondition(
                        key="expires_at", range=models.Range(gt=now_ms() if now is None else now)
                    ),
                ]
            )
        )
    return models.Filter(must=must)


# -- exact ---------------------------------------------------------------------------------------


class ExactIndex:
    """Exact cosine search in process; vectors persisted in a SQLite file of their own."""

    backend = "exact"
    in_process = True

    def __init__(self, model: str, dim: int, *, directory: Path) -> None:
        self.model = model
        self.dim = dim
        self.collection = collection_name(model)
        self.path = directory / f"{self.collection}.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._matrices = TenantMatrices(dim)
        self._lock = threading.Lock()

    async def open(self) -> bool:
        return await asyncio.to_thread(self._open)

    def _open(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (memory_id TEXT PRIMARY KEY, point BLOB NOT NULL, "
            "vector BLOB NOT NULL)"
        )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        created = not meta
        if created:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("embedding_model", self.model), ("dim", str(self.dim))],
            )
        else:
            try:
                check_collection(
                    self.collection, str(self.path), meta.get("embedding_model"),
                    int(meta.get("dim", "0")), self.model, self.dim,
                )  # fmt: skip
            except VectorIndexMismatch:
                db.close()
                raise
        decoder = msgspec.msgpack.Decoder(VectorPoint)
        with self._matrices.lock:
            for _, point, vector in db.execute("SELECT memory_id, point, vector FROM vectors"):
                self._matrices.put(decoder.decode(point), np.frombuffer(vector, dtype=np.float32))
        self._db = db
        return created

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise VectorIndexUnavailable(f"the exact vector index {self.path} is not open")
        return self._db

    async def upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        if points:
            await asyncio.to_thread(self._upsert, points, vectors)

    def _upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        encoder = msgspec.msgpack.Encoder()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR REPLACE INTO vectors (memory_id, point, vector) VALUES (?, ?, ?)",
                [
                    (p.memory_id, encoder.encode(p), vectors[i].tobytes())
                    for i, p in enumerate(points)
                ],
            )
            db.execute("COMMIT")
            self._matrices.put_many(points, vectors)

    async def delete(self, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            await asyncio.to_thread(self._delete, memory_ids)

    def _delete(self, memory_ids: Sequence[str]) -> None:
        with self._lock:
            db = self._conn()
            db.executemany("DELETE FROM vectors WHERE memory_id = ?", [(m,) for m in memory_ids])
            self._matrices.remove_many(memory_ids)

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        self._conn()
        return await _search_matrices(self._matrices, vector, flt, limit)

    async def count(self) -> int:
        return len(self._matrices)
